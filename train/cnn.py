"""Train the log-mel CNN: python -m train.cnn [--epochs N] [--data DIR] [--output DIR]

On several GPUs: accelerate launch --multi_gpu --num_processes N -m train.cnn [--batch-size B] [...]
"""

from train.run import main

if __name__ == "__main__":
    main("mel-cnn")
