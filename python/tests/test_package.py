"""Package-level promises: lazy imports, and the quick start's Java check."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_import_sparkdl_does_not_import_tensorflow():
    code = (
        "import sys, sparkdl\n"
        "sparkdl.readImages, sparkdl.ImageLoader\n"
        "import sparkdl.image.imageIO, sparkdl.models.registry, sparkdl.transformers.named_image\n"
        "sparkdl.DeepImageFeaturizer, sparkdl.DeepImagePredictor\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(sorted(sparkdl.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "ImageLoader" in out.stdout and "readImages" in out.stdout


def test_unknown_attribute_is_an_attribute_error():
    import sparkdl

    try:
        sparkdl.NoSuchThing
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_bootstrap_stops_with_advice_when_java_is_too_old(tmp_path):
    fake_java = tmp_path / "java"
    fake_java.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake_java.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:/usr/bin:/bin", CI="")
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "bootstrap.sh")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "Java 17" in out.stderr and "apt-get install openjdk-17-jre-headless" in out.stderr
