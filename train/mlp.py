"""Train the MFCC-statistics MLP: python -m train.mlp [--epochs N] [--data DIR] [--output DIR]"""

from train.run import main

if __name__ == "__main__":
    main("mfcc-mlp")
