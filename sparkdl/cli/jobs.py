"""The command line's commands: ``predict`` and ``featurize`` share one job skeleton
(:func:`run_job`: read the images, apply a stage, collect or write, summarize); ``models``
lists the registry. Tables are printed by :func:`format_table`."""
import os
import time

from sparkdl.cli.parsing import (DEFAULT_MODEL, EXIT_OK, FEATURIZE_FORMATS, PREDICT_FORMATS,
                                 CliError, check_inputs, check_output, model_entry, note,
                                 one_line, output_format)
from sparkdl.cli.session import Progress, Session

__all__ = ["COMMANDS", "run_job", "format_table", "DEFAULT_MODEL"]


def read_images(paths):
    """``readImages`` of ``paths``; a :class:`CliError` when Spark lists no file."""
    from sparkdl import readImages

    images = readImages(paths[0] if len(paths) == 1 else list(paths))
    from sparkdl.utils.session import inputFiles

    try:  # the file index Spark listed
        count = len(inputFiles(images))
    except Exception:
        count = None
    if count == 0:
        raise CliError(f"no files found at {' '.join(paths)}")
    return images


def write(df, output, fmt, overwrite):
    # "error", not "errorifexists": Spark Connect knows only the short name.
    writer = df.write.mode("overwrite" if overwrite else "error").format(fmt)
    if fmt == "csv":
        writer = writer.option("header", True)
    writer.save(output)


def written_counts(spark, output, fmt):
    """``(rows, invalid)`` of a written output, read back from its ``error`` column."""
    from pyspark.sql import functions as F

    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", True)
    elif fmt == "json":  # null fields are left out of JSON lines; give the reader the schema
        reader = reader.schema("path string, error string")
    row = reader.load(output).agg(F.count(F.lit(1)).alias("rows"),
                                  F.count("error").alias("invalid")).first()
    return row["rows"], row["invalid"]


def run_job(args, paths, formats, transform, describe, show=None, forWrite=None):
    """The skeleton of an image job: check the arguments, read ``paths`` as images, apply
    ``transform(images) -> DataFrame of path, <output>, error`` (building the model on the
    driver quietly), then print it (``show(rows) -> (text, invalid)``, when there is no
    ``--output``) or write it, and print the summary line ending in ``describe`` (a string,
    or a function called after the job, e.g. to name the runtime ``transform`` resolved).

    :param formats: the output formats the command writes.
    :param forWrite: ``DataFrame -> DataFrame`` applied before writing (given the format).
    """
    remote = getattr(args, "remote", None)
    if not remote:  # on Spark Connect the paths are the server's
        check_inputs(paths)
    fmt = None
    if args.output or show is None:
        fmt = output_format(args.output, formats)
        if not remote:
            check_output(args.output, args.overwrite)
    start = time.monotonic()
    with Session(args.master, args.verbose, remote) as run:
        try:
            images = read_images(paths)
            with run.quiet():  # builds the model on the driver
                result = transform(images)
            with Progress(run.spark, args.progress):
                if fmt is None:
                    rows = result.collect()
                else:
                    out = forWrite(result, fmt) if forWrite else result
                    write(out, args.output, fmt, args.overwrite)
                    total, invalid = written_counts(run.spark, args.output, fmt)
        except CliError:
            raise
        except Exception as e:
            raise run.failure(e) from e
    if fmt is None:
        text, invalid = show(sorted(rows, key=lambda r: r["path"] or ""))
        total = len(rows)
        print(text)
    where = f" -> {args.output}" if fmt else ""
    describe = describe() if callable(describe) else describe
    note(f"{total} image file{'s' * (total != 1)}, {invalid} invalid, from "
         f"{' '.join(paths)}{where} ({describe}, {time.monotonic() - start:.1f} s)")
    return EXIT_OK


def predict(args):
    from pyspark.sql import functions as F

    from sparkdl import DeepImagePredictor
    from sparkdl.resources import samplesDir

    entry = model_entry(args.model)
    predictor = DeepImagePredictor(inputCol="image", outputCol="predictions",
                                   modelName=entry.name, decodePredictions=True, topK=args.top_k,
                                   runtime=args.runtime, precision=args.precision)
    ran = {}

    def transform(images):
        ran["runtime"] = runtime_used(images.sparkSession, entry, True, None, args)
        result = predictor.transform(images).select(
            F.col("image.origin").alias("path"), "predictions", "error")
        # One small part file per output, sorted; inference keeps the input's partitions.
        return result.repartition(1).sortWithinPartitions("path")

    def show(rows):
        return (prediction_table(rows, args.top_k),
                sum(r["predictions"] is None for r in rows))

    return run_job(args, args.paths or [samplesDir()], PREDICT_FORMATS, transform,
                   lambda: f"{entry.name}, top {args.top_k}, {ran['runtime']}", show=show,
                   forWrite=lambda df, fmt: flat(df) if fmt == "csv" else df)


def flat(result):
    """Predictions as one string column, ``description:probability;...``, for CSV."""
    from pyspark.sql import functions as F

    labels = F.transform("predictions", lambda p: F.format_string("%s:%.4f", p["description"],
                                                                  p["probability"]))
    text = F.when(F.col("predictions").isNull(), F.lit(None)).otherwise(F.concat_ws(";", labels))
    return result.select("path", text.alias("predictions"), "error")


def featurize(args):
    from pyspark.sql import functions as F

    from sparkdl import DeepImageFeaturizer

    entry = model_entry(args.model)
    pooling = None if args.pooling == "none" else args.pooling
    size = entry.featureSize if pooling else entry.flattenedFeatureSize
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                     modelName=entry.name, pooling=pooling,
                                     runtime=args.runtime, precision=args.precision)
    ran = {}

    def transform(images):
        ran["runtime"] = runtime_used(images.sparkSession, entry, False, pooling, args)
        return featurizer.transform(images).select(
            F.col("image.origin").alias("path"), "features", "error")

    return run_job(args, args.paths, FEATURIZE_FORMATS, transform,
                   lambda: f"{entry.name}, {size} features, pooling {args.pooling}, "
                           f"{ran['runtime']}")


def runtime_used(spark, entry, includeTop, pooling, args):
    """What runs the stage's model, e.g. ``"runtime openvino fp32"``: resolved here on the
    driver, converting the model into this machine's cache, where local workers then find it
    (a cluster's executors resolve for themselves)."""
    from sparkdl.engine.shipping import handleFor, registryModel

    handle = handleFor(registryModel(entry, "imagenet", includeTop, pooling), spark)
    runtime, precision, note = handle.using(args.runtime, args.precision).resolveRuntime()
    text = f"runtime {runtime} {precision}"
    if args.runtime == "auto":
        text += " (auto" + (": " + one_line(note, 160) if note else "") + ")"
    return text


def models(args):
    from sparkdl.models.registry import (
        getModelEntry, isWeightsAvailableOffline, kerasCacheDir, supportedModelNames)

    rows = []
    for name in supportedModelNames():
        entry = getModelEntry(name)
        notop = isWeightsAvailableOffline(entry, include_top=False)
        top = isWeightsAvailableOffline(entry, include_top=True)
        offline = {(True, True): "yes", (False, False): "no", (True, False): "featurize only",
                   (False, True): "predict only"}[(notop, top)]
        height, width = entry.inputSize
        rows.append((name, f"{height}x{width}", str(entry.featureSize), offline,
                     entry.description))
    print(format_table(("model", "input", "features", "offline weights", "description"), rows,
                       right=(2,)))
    print(f"\nWeights that are not offline are downloaded on first use (keras.applications, "
          f"into {kerasCacheDir()}); 'featurize only' / 'predict only': only the weights "
          f"without / with the classifier are there.")
    return EXIT_OK


#: Command name -> the function running it (``args -> exit status``).
COMMANDS = {"predict": predict, "featurize": featurize, "models": models}


# --- output --------------------------------------------------------------------------------

def format_table(header, rows, right=(), spanning=()):
    """A plain-text table: a header, a rule, and the rows; columns two spaces apart.

    :param right: indices of the columns aligned right (others are aligned left).
    :param spanning: indices of rows whose cells after the first set no column width (e.g. a
        long message that spans the other columns).
    """
    widths = [max([len(str(header[i]))] + [len(str(row[i])) for k, row in enumerate(rows)
                                            if i == 0 or k not in spanning])
              for i in range(len(header))]

    def line(row):
        cells = [str(cell).rjust(widths[i]) if i in right else str(cell).ljust(widths[i])
                 for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def display_path(origin):
    return origin[len("file://"):] if origin.startswith("file:///") else origin


def common_folder(paths):
    """The longest folder prefix (ending in '/') shared by all ``paths``."""
    folders = [p[: p.rfind("/") + 1] for p in paths]
    prefix = os.path.commonprefix(folders)
    return prefix[: prefix.rfind("/") + 1]


def prediction_table(rows, top_k):
    """The ``predict`` table: a file per row, its top classes, or why it is invalid."""
    if not rows:
        return "(no images)"
    paths = [display_path(r["path"] or "") for r in rows]
    base = common_folder(paths)
    width = max(len(r["predictions"]) for r in rows if r["predictions"] is not None) \
        if any(r["predictions"] is not None for r in rows) else top_k
    header = ["file"] + [f"top {i + 1}" for i in range(width)]
    body, invalid = [], []
    for k, (path, row) in enumerate(zip(paths, rows)):
        cells = [path[len(base):]]
        if row["predictions"] is None:
            reason = one_line(row["error"] or "not an image", 100)
            cells += [f"invalid: {reason}"] + [""] * (width - 1)
            invalid.append(k)  # the reason spans the prediction columns: it sets no width
        else:
            cells += [f"{p['description']} {p['probability']:.3f}" for p in row["predictions"]]
            cells += [""] * (width - len(row["predictions"]))
        body.append(cells)
    return format_table(header, body, spanning=set(invalid))
