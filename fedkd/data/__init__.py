"""Datasets, seeded private/public/test splits and client partitioning."""

from fedkd.data.arrays import ArrayDataset, DataSplit
from fedkd.data.histogram import (
    PartitionStats,
    label_histogram,
    label_tv,
    partition_stats,
    plot_label_histogram,
)
from fedkd.data.idx import load_idx_folder, read_idx
from fedkd.data.partition import PARTITION_METHODS, partition
from fedkd.data.registry import DatasetLoader, available_datasets, register_dataset
from fedkd.data.splits import load_split

__all__ = [
    "PARTITION_METHODS",
    "ArrayDataset",
    "DataSplit",
    "DatasetLoader",
    "PartitionStats",
    "available_datasets",
    "label_histogram",
    "label_tv",
    "load_idx_folder",
    "load_split",
    "partition",
    "partition_stats",
    "plot_label_histogram",
    "read_idx",
    "register_dataset",
]
