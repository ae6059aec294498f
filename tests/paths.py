"""Where the repository's data lives, for tests in any room folder."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent   # the repository root
MODELS = ROOT / "models"                        # the model zoo
CONFIGS = ROOT / "solver_configs"               # shipped array files
FIXTURES = ROOT / "tests" / "fixtures"          # real-exporter ONNX fixtures
