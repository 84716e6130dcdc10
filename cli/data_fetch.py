"""``mixreorg data fetch``: image-text pairs (cc12m, cc3m, urls) into shards, or a benchmark dataset into a data root.

Examples:
    mixreorg data fetch cc12m --out data/cc12m --processes 16 --threads 64
    mixreorg data fetch urls --url-list my_pairs.parquet --out data/mine
    mixreorg data fetch voc --root data
    mixreorg data fetch cityscapes --root data --from leftImg8bit_trainvaltest.zip --from gtFine_trainvaltest.zip

On a Spark cluster (pip install 'mixreorg[spark]'; --out on a filesystem every worker sees):
    spark-submit --master spark://MASTER:7077 "$(python -c 'import mixreorg.cli.main as m; print(m.__file__)')" \\
        data fetch cc12m --out /shared/cc12m --distributor pyspark
"""

from __future__ import annotations

from pathlib import Path

import typer

from mixreorg.errors import MixreorgError

PAIRS = ("cc12m", "cc3m", "urls")


def fetch(
    name: str = typer.Argument(
        ..., help="cc12m, cc3m or urls (image-text pairs, with --out); voc, context, coco, coco-stuff, ade20k, "
        "cityscapes or imagenet (benchmarks, with --root)."),
    out: Path = typer.Option(None, "--out", help="Folder for the webdataset shards (image-text pairs)."),
    root: Path = typer.Option(None, "--root", help="Data root for benchmarks (mmsegmentation layout, e.g. data/)."),
    url_list: Path = typer.Option(
        None, "--url-list", help="Your own tsv/csv/parquet of url + caption; skips downloading the list."),
    image_size: int = typer.Option(
        512, "--image-size", help="Images are resized to this size (pixels; img2dataset's own default is 256), "
        "only when they are larger (img2dataset enlarges small ones by default)."),
    resize_mode: str = typer.Option(
        "keep_ratio", "--resize-mode", help="img2dataset resize mode: no, border, keep_ratio, keep_ratio_largest, "
        "center_crop (img2dataset's own default is border, which pads to a square; keep_ratio keeps every pixel "
        "for the training crops)."),
    processes: int = typer.Option(
        None, "--processes", help="Download processes (img2dataset's own default is 1). \\[default: all CPU cores]"),
    threads: int = typer.Option(
        64, "--threads", help="Download threads per process (img2dataset's own default is 256, which overloads "
        "small machines' DNS)."),
    distributor: str = typer.Option(
        "multiprocessing", "--distributor",
        help="multiprocessing (this machine) or pyspark (pip install 'mixreorg\\[spark]')."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="Samples per shard (keep it when resuming)."),
    timeout: int = typer.Option(10, "--timeout", help="Seconds to wait for each image."),
    retries: int = typer.Option(0, "--retries", help="Extra tries for each failed image."),
    sources: list[Path] = typer.Option(
        [], "--from", help="Local archive or folder to use instead of downloading (repeatable; Cityscapes and "
        "ImageNet need it)."),
    mirror: str = typer.Option(
        None, "--mirror", help="Base URL holding the files under their official names (or $MIXREORG_DATA_MIRROR)."),
    manifest: Path = typer.Option(
        None, "--manifest", help="A dataset manifest YAML to use instead of the built-in one."),
    keep_archives: bool = typer.Option(
        False, "--keep-archives/--delete-archives", help="Keep downloaded archives once the dataset is ready."),
) -> None:
    """Fetch image-text pairs into webdataset shards, or a benchmark dataset ready for evaluation.

    Pairs: the list becomes parquet, img2dataset writes jpg+txt+json shards; a rerun skips finished shards.

    Benchmarks: downloaded with resume, checked against published checksums, extracted, labels prepared.

    Spark cluster (pip install 'mixreorg\\[spark]'; --out on a filesystem every worker sees):

    spark-submit --master spark://MASTER:7077 MAIN data fetch cc12m --out /shared/cc12m --distributor pyspark

    where MAIN is the path printed by: python -c 'import mixreorg.cli.main as m; print(m.__file__)'
    """
    if name in PAIRS:
        if root is not None or sources or manifest is not None:
            raise MixreorgError(f"{name} takes --out (and --url-list), not --root/--from/--manifest")
        if out is None:
            raise MixreorgError(f"{name} needs --out DIR for the shards")
        from mixreorg.data.fetch_pairs import fetch_pairs

        fetch_pairs(name, out, url_list, image_size=image_size, resize_mode=resize_mode, processes=processes,
                    threads=threads, distributor=distributor, shard_size=shard_size, timeout=timeout,
                    retries=retries, mirror=mirror, log=typer.echo)
        return
    if out is not None or url_list is not None:
        raise MixreorgError(f"{name} takes --root DIR (and --from), not --out/--url-list")
    if root is None:
        raise MixreorgError(f"{name} needs --root DIR, the data folder that will hold it (e.g. data/)")
    from mixreorg.data.benchmarks.fetch import fetch_benchmark_data

    fetch_benchmark_data(name, root, sources, mirror=mirror, manifest=manifest, keep_archives=keep_archives,
                         log=typer.echo)
