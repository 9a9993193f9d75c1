"""What `import portrait_keras` gives: registered classes, no shadowed names, no TensorFlow until needed."""

import importlib
import pkgutil
import subprocess
import sys

import portrait_keras


def run_python(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, **kwargs)


def test_import_loads_no_keras_and_registers_the_classes_when_keras_comes(tmp_path):
    code = f"""
import sys
import portrait_keras
assert "keras" not in sys.modules and "tensorflow" not in sys.modules
import keras
from portrait_keras.schema import default_schema
assert "portrait_keras.models" in sys.modules  # registered by importing keras
path = {str(tmp_path / "m.keras")!r}
from portrait_keras.models import PortraitModel
PortraitModel(default_schema(), 3, input_shape=(64, 32, 3)).save(path)
"""
    assert run_python(code).returncode == 0
    # A fresh process: import portrait_keras, then Keras' own loader, in safe mode.
    load = f"""
import portrait_keras, keras
model = keras.models.load_model({str(tmp_path / "m.keras")!r}, safe_mode=True)
print(type(model).__name__, model.tasks[:2], model.num_ids)
"""
    result = run_python(load)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PortraitModel ('id', 'gender') 3" in result.stdout
    # Keras imported first works too.
    result = run_python(load.replace("import portrait_keras, keras", "import keras, portrait_keras"))
    assert result.returncode == 0, result.stderr[-2000:]


def test_without_the_package_the_model_file_does_not_load(tmp_path):
    # The registration is what makes it load (the test above could not fail otherwise).
    code = """
import keras
from keras.src.saving import object_registration
import portrait_keras.models  # noqa: F401
assert object_registration.get_registered_object("portrait_keras>PortraitModel") is not None
"""
    assert run_python(code).returncode == 0
    bare = "import keras; keras.saving.get_registered_object('portrait_keras>PortraitModel') is None or exit(1)"
    assert run_python(bare).returncode == 0


def test_public_functions_are_not_shadowed_by_submodules():
    for module in pkgutil.walk_packages(portrait_keras.__path__, "portrait_keras."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    import portrait_keras.metrics as metrics

    assert callable(portrait_keras.evaluate) and not hasattr(portrait_keras.evaluate, "__path__")
    assert type(portrait_keras.evaluate).__name__ == "function"
    for name in ("lts", "piq", "macro_f1", "evaluate_reid"):
        assert type(getattr(metrics, name)).__name__ == "function", name
    from portrait_keras import evaluate

    assert evaluate is portrait_keras.evaluation.evaluator.evaluate


def test_no_sys_path_insert_anywhere():
    import pathlib

    root = pathlib.Path(portrait_keras.__file__).resolve().parents[1]
    found = [
        f"{p.relative_to(root)}"
        for folder in ("portrait_keras", "experiments", "data_prep", "benchmarks", "tests")
        for p in (root / folder).rglob("*.py")
        if "sys.path.insert" in p.read_text(encoding="utf-8") and p.name != "test_package.py"
    ]
    assert found == []
