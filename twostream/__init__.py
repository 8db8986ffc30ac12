"""twostream: two-stream action recognition and the classic video classifiers, in plain PyTorch.

The stages after ``flowprep``, one module per concern::

    data.py        -> clips from a flowprep store (spatial: RGB frames, temporal: flow stacks)
    transforms.py  -> TSN augmentation: multi-scale corner crops, flips that negate flow x, test crops
    models/        -> ResNet streams and the video classifiers, built by name; 2D -> 3D inflation
    pretrained.py  -> --pretrained imagenet|kinetics400: torchvision's files, downloaded into the hub cache
    convert.py     -> mmaction2 / torchvision-reference checkpoints -> our state dicts, checked complete
    export.py      -> ONNX / TorchScript with the input layout in the file's metadata
    config.py      -> TrainConfig, the settings of a run (to_dict / from_dict, the CLI's options)
    train.py       -> training loop, exact resume
    checkpoint.py  -> checkpoints: plain dicts, written atomically, read weights-only; typed (Checkpoint)
    inference.py   -> build a model, score views and videos (used by train, evaluate, predict)
    distributed.py -> the device resolver and the helpers for torchrun (DDP)
    evaluate.py    -> multi-clip, multi-crop evaluation and score files
    metrics.py     -> score files and accuracies, numpy only
    fuse.py        -> late fusion of score files (no torch)
    report.py      -> the HTML results page (plots.py: confusion matrices, training curves)
    predict.py     -> Predictor: checkpoints loaded once, new videos (files or frames) prepared as the store says
    errors.py      -> TwostreamError, the base of every error for users
    cli.py         -> the ``twostream`` command
"""
