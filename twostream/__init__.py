"""twostream: two-stream action recognition and the classic video classifiers, in plain PyTorch."""
