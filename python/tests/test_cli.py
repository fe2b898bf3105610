"""The ``sparkdl`` command line: in-process runs on the shared session, and one real process."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fixtures
from sparkdl import DeepImageFeaturizer, readImages
from sparkdl.cli import main
from sparkdl.cli.session import summarize
from sparkdl.resources import samplesDir
from numerics import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATS = ("Egyptian_cat", "tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "lynx")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out):
    """``{file: [cells...]}`` of the printed prediction table."""
    lines = out.strip().splitlines()
    assert lines[0].split()[0] == "file" and set(lines[1]) <= {"-", " "}
    return {line.split()[0]: line.split()[1:] for line in lines[2:]}


def assert_one_line_error(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sparkdl: error: ")
    assert "Traceback" not in err and "\tat " not in err and "at org." not in err
    return lines[0]


@pytest.fixture
def mixed_folder(tmp_path):
    """Two sample photos and two files that are not images."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("coffee.jpg", "chelsea.jpg"):
        shutil.copy(os.path.join(samplesDir(), name), folder / name)
    broken = fixtures.broken_files()
    (folder / "notes.txt").write_bytes(broken["notes.txt"])
    (folder / "garbage.png").write_bytes(broken["garbage.png"])
    return folder


def test_predict_prints_a_table_of_the_samples_and_leaves_the_session_running(spark, capsys):
    code, out, err = run(capsys, "predict", "--top-k", "3")  # no PATH: the bundled samples
    assert code == 0, err
    assert out.splitlines()[0].split() == ["file", "top", "1", "top", "2", "top", "3"]
    rows = table_rows(out)
    assert sorted(rows) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    assert rows["coffee.jpg"][0] == "espresso" and 0.5 < float(rows["coffee.jpg"][1]) <= 1
    assert rows["chelsea.jpg"][0] in CATS
    assert len(rows["coffee.jpg"]) == 6  # three (label, probability) pairs
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("sparkdl: 3 image files, 0 invalid, from ")
    assert "EfficientNetLite0" in summary
    # The command line runs "auto" and says what ran: OpenVINO, installed by the test extra.
    assert "runtime openvino fp32 (auto)" in summary
    # The session was the caller's: still usable.
    assert spark.sparkContext._jsc is not None and spark.range(3).count() == 3


def test_predict_counts_invalid_files_in_the_summary(spark, capsys, mixed_folder):
    code, out, err = run(capsys, "predict", str(mixed_folder))
    assert code == 0, err
    rows = table_rows(out)
    assert sorted(rows) == ["chelsea.jpg", "coffee.jpg", "garbage.png", "notes.txt"]
    assert rows["coffee.jpg"][0] == "espresso" and len(rows["coffee.jpg"]) == 10  # top 5
    assert rows["notes.txt"][0] == "invalid:" and rows["garbage.png"][0] == "invalid:"
    assert "sparkdl: 4 image files, 2 invalid, from " in err


def test_zero_byte_files_are_listed_and_counted_as_invalid(spark, capsys, tmp_path):
    shutil.copy(os.path.join(samplesDir(), "coffee.jpg"), tmp_path / "coffee.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    code, out, err = run(capsys, "predict", str(tmp_path))
    assert code == 0, err
    rows = table_rows(out)
    assert sorted(rows) == ["coffee.jpg", "empty.jpg"]
    assert rows["empty.jpg"][:3] == ["invalid:", "empty", "file"]
    assert "sparkdl: 2 image files, 1 invalid, from " in err


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_predict_output_files(spark, capsys, mixed_folder, tmp_path, fmt):
    output = str(tmp_path / f"predictions.{fmt}")
    code, out, err = run(capsys, "predict", str(mixed_folder), "--top-k", "2",
                         "--output", output)
    assert code == 0, err
    assert out == ""
    assert f"4 image files, 2 invalid, from {mixed_folder} -> {output}" in err
    reader = spark.read.option("header", True) if fmt == "csv" else spark.read
    if fmt == "json":
        reader = reader.schema("path string, predictions array<struct<class: string, "
                               "description: string, probability: float>>, error string")
    rows = {os.path.basename(r["path"]): r for r in reader.format(fmt).load(output).collect()}
    assert sorted(rows) == ["chelsea.jpg", "coffee.jpg", "garbage.png", "notes.txt"]
    assert rows["notes.txt"]["predictions"] is None and rows["notes.txt"]["error"]
    assert rows["coffee.jpg"]["error"] is None
    assert rows["coffee.jpg"]["path"].startswith("file:///")
    coffee = rows["coffee.jpg"]["predictions"]
    if fmt == "csv":  # one string column: description:probability;...
        pairs = [item.split(":") for item in coffee.split(";")]
        assert len(pairs) == 2 and pairs[0][0] == "espresso" and 0.5 < float(pairs[0][1]) <= 1
        assert rows["chelsea.jpg"]["predictions"].split(":")[0] in CATS
    else:
        assert len(coffee) == 2
        assert coffee[0]["description"] == "espresso" and coffee[0]["class"] == "n07920052"
        assert coffee[0]["probability"] > coffee[1]["probability"]
        assert rows["chelsea.jpg"]["predictions"][0]["description"] in CATS
    # An existing output is refused before any work, unless --overwrite.
    code, _, err = run(capsys, "predict", str(mixed_folder), "--output", output)
    assert code == 1 and "already exists (use --overwrite" in assert_one_line_error(err)
    code, _, err = run(capsys, "predict", samplesDir(), "--output", output, "--overwrite")
    assert code == 0 and "3 image files, 0 invalid" in err


def test_featurize_writes_parquet_vectors(spark, capsys, mixed_folder, tmp_path):
    output = str(tmp_path / "features.parquet")
    code, out, err = run(capsys, "featurize", str(mixed_folder), "--model", "EfficientNetLite0",
                         "--pooling", "avg", "--output", output)
    assert code == 0, err
    assert "4 image files, 2 invalid" in err and "1280 features" in err
    rows = {os.path.basename(r["path"]): r for r in spark.read.parquet(output).collect()}
    assert sorted(rows) == ["chelsea.jpg", "coffee.jpg", "garbage.png", "notes.txt"]
    # The features are DeepImageFeaturizer's on the same files, not merely 1280 numbers
    # (the command line ran "auto", OpenVINO fp32: within 1e-4 of TensorFlow's).
    assert "runtime openvino fp32 (auto)" in err
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                     modelName="EfficientNetLite0", pooling="avg")
    reference = {os.path.basename(r.origin): r.features for r in featurizer.transform(
        readImages(str(mixed_folder))).select("image.origin", "features").collect()}
    for name in ("coffee.jpg", "chelsea.jpg"):
        assert rows[name]["features"].size == 1280 and rows[name]["error"] is None
        assert_close(rows[name]["features"].toArray(), reference[name].toArray(), 1e-4)
    assert np.abs(rows["coffee.jpg"]["features"].toArray()
                  - rows["chelsea.jpg"]["features"].toArray()).max() > 0.1
    assert rows["notes.txt"]["features"] is None and rows["notes.txt"]["error"]


def test_featurize_needs_a_parquet_output(capsys):
    code, _, err = run(capsys, "featurize", samplesDir(), "--output", "/tmp/features.csv")
    assert code == 2 and ".parquet" in assert_one_line_error(err)


def test_models_lists_the_registry_with_offline_weights(capsys, monkeypatch, tmp_path):
    from sparkdl.models import registry

    # An empty keras cache (no internet here), except ResNet50's weights without the top.
    monkeypatch.setattr(registry, "kerasCacheDir", lambda: str(tmp_path))
    (tmp_path / registry.getModelEntry("ResNet50").weightsFile).write_bytes(b"")
    code, out, err = run(capsys, "models")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["model", "input", "features", "offline", "weights"]
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    for name in registry.supportedModelNames():
        entry = registry.getModelEntry(name)
        cells = rows[name].split()
        assert cells[1] == "x".join(map(str, entry.inputSize))
        assert cells[2] == str(entry.featureSize)
    assert rows["EfficientNetLite0"].split()[1:4] == ["224x224", "1280", "yes"]
    assert rows["InceptionV3"].split()[1:4] == ["299x299", "2048", "no"]
    assert rows["VGG16"].split()[3] == "no"
    assert rows["ResNet50"].split()[3:5] == ["featurize", "only"]


def test_missing_path_is_one_line_and_a_failure(capsys, tmp_path):
    code, out, err = run(capsys, "predict", str(tmp_path / "no-such-folder"))
    assert code == 1 and out == ""
    assert "no such file or directory" in assert_one_line_error(err)


def test_glob_without_matches_is_spark_error_summarized(spark, capsys, tmp_path):
    code, _, err = run(capsys, "predict", str(tmp_path / "*.jpg"))
    assert code == 1
    line = assert_one_line_error(err)
    assert "Path does not exist" in line and "PATH_NOT_FOUND" not in line


def test_empty_folder_is_a_failure(spark, capsys, tmp_path):
    code, _, err = run(capsys, "featurize", str(tmp_path), "--output",
                       str(tmp_path / "out" / "f.parquet"))
    assert code == 1 and "no files found" in assert_one_line_error(err)


def test_unknown_model_lists_the_models(capsys):
    code, out, err = run(capsys, "predict", samplesDir(), "--model", "ResNet9000")
    assert code == 2 and out == ""
    line = assert_one_line_error(err)
    assert "unsupported model 'ResNet9000'" in line
    assert "EfficientNetLite0" in line and "InceptionV3" in line


def test_bad_arguments(capsys):
    assert run(capsys, "predict", "--top-k", "0")[0] == 2
    code, _, err = run(capsys, "predict", "--output", "predictions.xlsx")
    assert code == 2 and ".parquet, .csv, .json" in assert_one_line_error(err)
    assert run(capsys, "--help")[0] == 0


def test_progress_lines_on_stderr(spark, capsys):
    code, _, err = run(capsys, "predict", "--progress", "0.05", "--top-k", "1")
    assert code == 0, err
    progress = [line for line in err.splitlines() if "tasks done" in line]
    assert progress and all(line.startswith("sparkdl: ") for line in progress)


def test_errors_from_spark_are_summarized_in_one_line(spark):
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PythonException
    from pyspark.sql import functions as F

    with pytest.raises(Py4JJavaError) as java_error:
        spark.sparkContext._jvm.java.lang.Class.forName("no.such.Class")
    assert summarize(java_error.value) == "java.lang.ClassNotFoundException: no.such.Class"

    @F.udf("int")
    def boom(x):
        raise ValueError("boom on row")

    with pytest.raises(PythonException) as python_error:
        spark.range(1).select(boom("id")).collect()
    assert summarize(python_error.value) == \
        "a Python worker failed: ValueError: boom on row"


def cli_process(*argv, tmpdir, timeout=600):
    """``python -m sparkdl.cli ARGV`` in a new process, importing this checkout's sparkdl."""
    path = [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), TMPDIR=str(tmpdir))
    return subprocess.run([sys.executable, "-m", "sparkdl.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def test_end_to_end_process_on_the_samples(tmp_path):
    done = cli_process("predict", tmpdir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert sorted(rows) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    assert rows["coffee.jpg"][0] == "espresso"
    assert rows["chelsea.jpg"][0] in CATS
    # Spark's, the JVM's and TensorFlow's output went to the log file: stderr is sparkdl's.
    err = done.stderr.strip().splitlines()
    assert err and all(line.startswith("sparkdl: ") for line in err), done.stderr[-3000:]
    assert err[-1].startswith("sparkdl: 3 image files, 0 invalid, from ")
    assert not list(tmp_path.glob("sparkdl-*.log"))  # the log of a run that worked is removed


def test_bad_master_is_one_line_naming_the_kept_log(tmp_path):
    done = cli_process("predict", "--master", "nope", tmpdir=tmp_path, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    line = assert_one_line_error(done.stderr)
    assert "could not start Spark" in line and "Master must" in line
    log = line.rsplit("(Spark log: ", 1)[1].rstrip(")")
    assert os.path.dirname(log) == str(tmp_path) and "SparkException" in open(log).read()


def test_featurize_on_spark_connect_equals_classic(spark, connect_server, mixed_folder, tmp_path):
    output = str(tmp_path / "remote.parquet")
    done = cli_process("featurize", str(mixed_folder), "--remote", connect_server.url,
                       "--output", output, tmpdir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 image files, 2 invalid" in done.stderr
    assert connect_server.token not in done.stderr + done.stdout
    remote = {os.path.basename(r["path"]): r for r in spark.read.parquet(output).collect()}
    reference = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                    modelName="EfficientNetLite0").transform(
        readImages(str(mixed_folder))).select("image.origin", "features").collect()
    reference = {os.path.basename(r.origin): r.features for r in reference}
    for name in ("coffee.jpg", "chelsea.jpg"):
        assert_close(remote[name]["features"].toArray(), reference[name].toArray(), 1e-5)
    assert remote["notes.txt"]["features"] is None and remote["notes.txt"]["error"]


def test_unreachable_remote_is_one_line_at_once(capsys):
    code, out, err = run(capsys, "predict", "--remote", "sc://127.0.0.1:1/;token=secret")
    line = assert_one_line_error(err)
    assert code == 1 and "could not connect to the Spark Connect server sc://127.0.0.1:1" in line
    assert "secret" not in err
    code, _, err = run(capsys, "predict", "--remote", "sc://127.0.0.1:1", "--master", "local")
    assert code == 2 and "exclude each other" in assert_one_line_error(err)
