"""cph-collector: which projects is each Huawei Cloud CPH image shared with, as Parquet."""

__version__ = "0.1.0"
