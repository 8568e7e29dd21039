"""Hospital data for fedlora: loading a hospital's own file, the bundled offline data sets, named tasks,
train/test splits and the partitioners that simulate hospitals with different data.

Importing this package does no I/O; bundled data are fetched on the first :func:`load_task`.
"""

from client_agent.data.dataset import Dataset, train_test_split
from client_agent.data.errors import DataError, FetchError, PartitionError
from client_agent.data.heatmap import plot_heatmap
from client_agent.data.loaders import load_file
from client_agent.data.partition import (
    Partition,
    client_class_counts,
    dirichlet,
    iid,
    label_proportion,
    natural,
)
from client_agent.data.shares import Share, hospital_share, partition, task_split
from client_agent.data.tasks import TASKS, drug_condition, load_task
from client_agent.data.wheels import PINNED_WHEELS, default_cache_dir, fetch_wheel, read_wheel_member

__all__ = [
    "PINNED_WHEELS",
    "TASKS",
    "DataError",
    "Dataset",
    "FetchError",
    "Partition",
    "PartitionError",
    "Share",
    "client_class_counts",
    "default_cache_dir",
    "dirichlet",
    "drug_condition",
    "fetch_wheel",
    "hospital_share",
    "iid",
    "label_proportion",
    "load_file",
    "load_task",
    "natural",
    "partition",
    "plot_heatmap",
    "read_wheel_member",
    "task_split",
    "train_test_split",
]
