"""Train the log-mel CNN: python -m train.cnn [--epochs N] [--data DIR] [--output DIR]"""

from train.run import main

if __name__ == "__main__":
    main("mel-cnn")
