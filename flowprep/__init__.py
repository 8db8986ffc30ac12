"""flowprep: decode videos, compute dense optical flow, store frames and flow in HDF5.

The pipeline, one module per stage::

    decode.py   -> frames from a video file (resize, temporal subsampling)
    flow.py     -> dense optical flow methods behind a small registry (tvl1_torch.py: our batched TV-L1)
    groundtruth.py -> a flow benchmark with exact ground truth (photographs moved by known motions)
    quantize.py -> flow <-> uint8 mappings
    dataset.py  -> discover labelled videos and splits under a dataset root: class folders, split files, list files
    store.py    -> the on-disk store (one HDF5 file per video) and its reader
    extract.py  -> parallel, resumable extraction of a whole dataset (cluster.py: on a Dask cluster)
    rawframes.py-> import frame folders of denseflow / mmaction2 / TSN into a store, export a store to them
    visualize.py-> colour-coded flow images
    cli.py      -> the ``flowprep`` command
"""

__version__ = "0.1.0"
