"""Train the MFCC-statistics MLP: python -m train.mlp [--epochs N] [--data DIR] [--output DIR]

On several GPUs: accelerate launch --multi_gpu --num_processes N -m train.mlp [--batch-size B] [...]
"""

from train.run import main

if __name__ == "__main__":
    main("mfcc-mlp")
