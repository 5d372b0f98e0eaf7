"""Evaluation-task families; importing this package registers them all."""
from lmscale.data.tasks import bigbench  # noqa: F401
from lmscale.data.tasks import generated  # noqa: F401
from lmscale.data.tasks import humaneval  # noqa: F401
from lmscale.data.tasks import python_code  # noqa: F401
from lmscale.data.tasks import tfds_tasks  # noqa: F401
from lmscale.data.tasks import python_graded  # noqa: F401
