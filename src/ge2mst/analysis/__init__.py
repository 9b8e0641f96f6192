"""Everything that measures a network, each returning a JSON-serialisable dict: exactness
(`verification`, with the neuron-by-neuron evidence of `evidence` and the references beyond the
recorded run of `references`), accuracy and energy (`evaluation`), operation counts (`energy`, and
`energy_stbp` for networks trained through time), static facts (`info`), effective dimension
(`effdim`) and deliberate faults that the exactness check must catch (`faults`)."""

from .energy import OperationCounter, count_operations
from .energy_stbp import count_stbp_operations
from .evaluation import evaluate
from .info import model_info
from .plots import to_markdown
from .verification import exactness_failures, is_exact, verify

__all__ = ["OperationCounter", "count_operations", "count_stbp_operations", "evaluate",
           "exactness_failures", "is_exact", "model_info", "to_markdown", "verify"]
