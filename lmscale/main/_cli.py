"""Shared prologue of the binaries: the common flags, multi-host start-up, gin parsing.

Private to `lmscale.main`: every binary imports this module and the library, never another
binary. Everything a newcomer can get wrong on the command line fails here, in seconds and
before anything is compiled or trained, with the culprit named:

- a gin file (or an `include`) that does not exist: the file and the search path (cwd,
  repository root) and close names;
- a syntax error: the file (or the binding) and its line;
- a macro set on the command line that no gin file uses (`TOKN_MULTIPLIER = 3`, which gin
  would accept silently): "did you mean TOKEN_MULTIPLIER";
- a macro declared `%gin.REQUIRED` and left unset, when the binary's call needs it: its name;
- an unknown eval task, corpus or vocabulary anywhere in the configured call (`preflight`):
  all of them at once, with close matches.

t5x's flag conventions are accepted: `--gin.NAME=value` and `--gin.Configurable.param=value`
are shorthands for `--gin_bindings="NAME = value"` (`parse_flags`, the binaries'
`flags_parser`), and `--help` lists these common flags beside the binary's own.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import pathlib
import re
import sys
from typing import Any, Callable, Iterable, Sequence

from absl import app, flags, logging

from lmscale import compilation, logs, runtime

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin files, parsed in order (found from the cwd or "
                          "the repository root).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files; "
                          "--gin.NAME=value is a shorthand for --gin_bindings='NAME = value'.")
flags.DEFINE_string("workdir", None, "Parent directory of the run directories.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with the cluster's environment.")
flags.DEFINE_enum("console", "quiet", logs.CONSOLE_MODES,
                  "Console detail: quiet (progress lines, warnings, errors), info or debug "
                  "(library log records too). Everything goes to <workdir>/logs/ anyway.")
flags.DEFINE_string("compilation_cache_dir", None,
                    "JAX's persistent compilation cache (default <workdir>/.jax_cache; "
                    "'' turns it off).")
_COMMON_FLAGS = ("gin_file", "gin_bindings", "workdir", "coordinator_address",
                 "num_processes", "process_id", "distributed", "console",
                 "compilation_cache_dir")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
GIN_PREFIX = "--gin."
# Fields (of configs, or parameters of the configured call) that name registry entries.
TASK_FIELDS = ("tasks", "mc_tasks", "passuntil_tasks", "greedy_tasks")
CORPUS_FIELDS = ("corpus",)
VOCAB_FIELDS = ("vocab_spec",)


class GinConfigError(ValueError):
    """A gin file, binding, macro or registry name is wrong; the message names it and what
    to do. The binaries exit with it as a one-paragraph message (no usage, no traceback)."""


# ---------------------------------------------------------------------------------------
# Flags.


def gin_shorthand(argv: Sequence[str]) -> list[str]:
    """argv with each `--gin.NAME=value` rewritten as `--gin_bindings=NAME = value`."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if arg.startswith(GIN_PREFIX):
            name, sep, value = arg[len(GIN_PREFIX):].partition("=")
            if not sep or not name:
                raise GinConfigError(f"{arg!r}: write --gin.NAME=value (a macro) or "
                                     f"--gin.Configurable.param=value")
            arg = f"--gin_bindings={name} = {value}"
        out.append(arg)
    return out


def parse_flags(argv: Sequence[str]) -> list[str]:
    """The binaries' `flags_parser` for `app.run`: gin shorthands, then absl's parser.

    Also makes the common flags key flags of the running binary, so `--help` lists them.
    """
    for name in _COMMON_FLAGS:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    try:
        argv = gin_shorthand(argv)
    except GinConfigError as e:
        sys.stderr.write(f"FATAL Flags parsing error: {e}\n")
        sys.exit(1)
    return app.parse_flags_with_usage(argv)


def run(main: Callable) -> None:
    """`app.run(main)` with the gin shorthands and the common flags in `--help`."""
    app.run(main, flags_parser=parse_flags)


# ---------------------------------------------------------------------------------------
# Gin files and bindings.


def search_path() -> list[pathlib.Path]:
    """Where relative gin files (and their includes) are looked for, in order."""
    cwd = pathlib.Path.cwd()
    return [cwd] if cwd.resolve() == REPO_ROOT else [cwd, REPO_ROOT]


def find_gin_file(name: str) -> str:
    """The path of gin file `name` (absolute, or relative to the cwd or repository root).

    Raises:
      GinConfigError: not found; names every place looked at and close file names.
    """
    path = pathlib.Path(name).expanduser()
    tried = [path] if path.is_absolute() else [p / path for p in search_path()]
    for candidate in tried:
        if candidate.is_file():
            return str(candidate)
    known = sorted({str(p.relative_to(root)) for root in search_path()
                    for p in (root / "experiments").rglob("*.gin")})
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else \
        f"; gin files under experiments/: {known}"
    raise GinConfigError(f"gin file {name!r} not found; searched {[str(t) for t in tried]} "
                         f"(search path: the cwd, then the repository root){hint}")


def _reraise(where: str, e: Exception):
    """A gin parse failure as a GinConfigError naming `where` (and a missing include)."""
    text = str(e)
    missing = re.search(r"include\s+['\"]([^'\"]+)['\"]", text)
    if isinstance(e, (TypeError, OSError)) and missing:
        name = missing.group(1)
        tried = [str(p / name) for p in search_path()]
        location = "\n".join(line for line in text.splitlines() if line.startswith("  "))
        raise GinConfigError(f"{where}: included gin file {name!r} not found; searched "
                             f"{tried} (the cwd, then the repository root)\n{location}"
                             ) from None
    if isinstance(e, SyntaxError) and e.lineno:
        raise GinConfigError(f"{where}, line {e.lineno}: gin syntax error: {e.msg}"
                             f"{': ' + e.text.strip() if e.text else ''}") from None
    raise GinConfigError(f"{where}: {type(e).__name__}: {text}") from None


def _macros() -> dict[str, Any]:
    """Macro name -> its (unresolved) value, for every macro in gin's current config."""
    from gin import config as gin_config  # pylint: disable=g-import-not-at-top
    return {scope: params.get("value") for (scope, selector), params in
            gin_config._CONFIG.items() if selector == "gin.macro"}  # pylint: disable=protected-access


def _references(value) -> Iterable[Any]:
    """Every gin ConfigurableReference inside a bound value (lists, dicts, tuples)."""
    from gin import config as gin_config  # pylint: disable=g-import-not-at-top
    if isinstance(value, gin_config.ConfigurableReference):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _references(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _references(v)


def _macro_name(ref) -> str | None:
    scoped = ref.scoped_selector
    return scoped.rsplit("/", 1)[0] if scoped.endswith("/gin.macro") else None


def _used_macros() -> set[str]:
    """Macros referenced (`%NAME`) by any binding of the current config."""
    from gin import config as gin_config  # pylint: disable=g-import-not-at-top
    used = set()
    for params in gin_config._CONFIG.values():  # pylint: disable=protected-access
        for ref in _references(list(params.values())):
            name = _macro_name(ref)
            if name:
                used.add(name)
    return used


def _check_binding_macros(file_macros: set[str], binding_macros: set[str]) -> None:
    """Rejects a macro set on the command line that no gin file defines or uses."""
    known = file_macros | _used_macros()
    unknown = sorted(m for m in binding_macros if m not in known)
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else \
            f"known macros: {sorted(known)}"
        lines.append(f"  macro {name!r} is set by --gin_bindings but no gin file defines or "
                     f"uses it (gin would ignore it); {hint}")
    raise GinConfigError("unknown gin macro(s):\n" + "\n".join(lines))


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> str:
    """Parses gin files (searched from the cwd and the repository root) and bindings.

    Returns:
      The resolved configuration text (saved as each run's config.gin).
    Raises:
      GinConfigError: a file or include not found, a syntax error (file and line), an
        unknown configurable or parameter (the binding named), or a command-line macro no
        gin file uses (with close names).
    """
    import gin  # pylint: disable=g-import-not-at-top
    from gin import config as gin_config  # pylint: disable=g-import-not-at-top
    for p in reversed(search_path()):
        if str(p) not in gin_config._LOCATION_PREFIXES:  # pylint: disable=protected-access
            gin.add_config_file_search_path(str(p))
    for name in gin_files:
        path = find_gin_file(name)
        try:
            gin.parse_config_file(path)
        except Exception as e:  # pylint: disable=broad-except
            _reraise(f"--gin_file={name}" + (f" ({path})" if path != name else ""), e)
    file_macros = set(_macros())
    binding_macros = set()
    for binding in gin_bindings:
        try:
            gin.parse_config(binding)
        except Exception as e:  # pylint: disable=broad-except
            _reraise(f"--gin_bindings={binding!r}", e)
        target = binding.split("=", 1)[0].strip()
        if re.fullmatch(r"[A-Za-z_]\w*", target):
            binding_macros.add(target)
    _check_binding_macros(file_macros, binding_macros)
    return gin.config_str()


# ---------------------------------------------------------------------------------------
# Configured calls: required macros and registry names checked before the call.


def _is_required(value) -> bool:
    """Whether a macro's value is `%gin.REQUIRED` (declared, never set)."""
    return getattr(value, "scoped_selector", None) == "gin.REQUIRED/gin.constant"


def unset_required(selector: str, scopes: Sequence[str] = (), skip: Iterable[str] = (),
                   where: str = "", depth: int = 0) -> list[str]:
    """'Class.param needs NAME' for each parameter of configurable `selector` (and of the
    configurables it calls, recursively) bound to a `%gin.REQUIRED` macro left unset."""
    from gin import config as gin_config  # pylint: disable=g-import-not-at-top
    if depth > 8:
        return []
    macros = _macros()
    bindings = gin_config._get_bindings(selector, list(scopes))  # pylint: disable=protected-access
    label = where or selector.rsplit(".", 1)[-1]
    found = []
    for param, value in bindings.items():
        if param in skip:
            continue
        for ref in _references(value):
            name = _macro_name(ref)
            if name is not None:
                if _is_required(macros.get(name)):
                    found.append(f"{label}.{param} needs macro {name}")
                continue
            if ref.configurable is not None:
                found += unset_required(ref.configurable.selector, ref.scopes,
                                        where=f"{label}.{param}", depth=depth + 1)
    return found


def _names_in(value, fields: Sequence[str], out: dict[str, dict], where: str,
              depth: int = 0) -> None:
    """Collects registry names (name -> where it is set) from dataclass fields, recursively,
    and from dict keys, named in `fields`."""
    if depth > 6:
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        prefix = type(value).__name__
    elif isinstance(value, dict):
        items, prefix = list(value.items()), where
    elif isinstance(value, (list, tuple)):
        for v in value:
            _names_in(v, fields, out, where, depth + 1)
        return
    else:
        return
    for key, v in items:
        if key in fields:
            kind = "tasks" if key in TASK_FIELDS else "corpora" if key in CORPUS_FIELDS \
                else "vocab_specs"
            for name in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(name, str):
                    out[kind].setdefault(name, f"{prefix}.{key}={name!r}")
        else:
            _names_in(v, fields, out, f"{prefix}.{key}", depth + 1)


def preflight(tasks: Iterable[str] = (), corpora: Iterable[str] = (),
              vocab_specs: Iterable[str] = (), where: dict[str, str] | None = None) -> None:
    """Resolves every eval task, corpus and vocabulary in the registries of `lmscale.data`.

    Args:
      tasks, corpora, vocab_specs: names to resolve.
      where: name -> where it is set (e.g. "StudyConfig.mc_tasks='x'"), for the message.
    Raises:
      ConfigError: every name that does not resolve, all at once, each with where it is
        set and the registry's message (close matches, known names).
    """
    from lmscale.data import corpora as corpora_lib  # pylint: disable=g-import-not-at-top
    from lmscale.data import registry  # pylint: disable=g-import-not-at-top
    from lmscale.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    from lmscale.models import ConfigError  # pylint: disable=g-import-not-at-top
    where = where or {}
    problems = []

    def note(name, message):
        problems.append(f"{where.get(name, repr(name))}: {message}")

    for spec in sorted(set(vocab_specs)):
        try:
            vocab_lib.get_vocabulary(spec)
        except (ValueError, OSError) as e:
            note(spec, e)
    for name in sorted(set(corpora)):
        try:
            corpora_lib.get_corpus_task(name)
        except (ValueError, KeyError) as e:
            known = sorted(corpora_lib._CORPORA)  # pylint: disable=protected-access
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            note(name, f"{e}" + (f"; did you mean {' or '.join(close)}?" if close else ""))
    for name in sorted(set(tasks)):
        try:
            registry.get_eval_task(name)
        except (KeyError, ValueError) as e:
            note(name, e.args[0] if e.args else e)
    if problems:
        raise ConfigError(f"{len(problems)} unknown name(s) in the configuration, found "
                          f"before anything ran:\n  " + "\n  ".join(problems))


_PREFLIGHTED: set[tuple] = set()  # name sets already resolved in this process


def configured(fn: Callable) -> Callable:
    """`fn` with its gin bindings (dynamically registered by the gin files' imports).

    Each call first checks, before `fn` runs: no parameter it takes from gin (directly or
    through the configurables it builds) is a `%gin.REQUIRED` macro left unset, and every
    eval task, corpus and vocabulary among its arguments resolves (`preflight`).
    """
    import gin  # pylint: disable=g-import-not-at-top
    try:
        wrapped = gin.get_configurable(fn)
    except ValueError as e:
        raise ValueError(f"{fn.__module__}.{fn.__qualname__} is not configured: the gin files "
                         f"must `import {fn.__module__}` (see experiments/runs/train.gin)"
                         ) from e
    from gin import config as gin_config  # pylint: disable=g-import-not-at-top
    found_configurable = (gin_config._inverse_lookup(fn)  # pylint: disable=protected-access
                          or gin_config._inverse_lookup(wrapped))  # pylint: disable=protected-access
    selector = found_configurable.selector

    @functools.wraps(fn)
    def call(*args, **kwargs):
        check_call(selector, kwargs, fn.__qualname__)
        if isinstance(fn, type):  # a config: checked by the call that uses it, except
            built = wrapped(*args, **kwargs)  # a list of runs (LadderConfig), checked now
            from lmscale.train import ladder  # pylint: disable=g-import-not-at-top
            if isinstance(built, ladder.LadderConfig):
                check_structure({"": built})
            return built
        check_structure({**_defaults(fn), **gin.get_bindings(selector), **kwargs})
        return wrapped(*args, **kwargs)

    return call


def _defaults(fn: Callable) -> dict[str, Any]:
    """`fn`'s parameters that have defaults (the configs it uses when gin binds none)."""
    import inspect  # pylint: disable=g-import-not-at-top
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _collect(value, out: dict[str, list], depth: int = 0) -> None:
    """Config instances inside `value` (dataclass fields, dicts, sequences), by class name."""
    if depth > 6:
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out.setdefault(type(value).__name__, []).append(value)
        for f in dataclasses.fields(value):
            _collect(getattr(value, f.name), out, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, out, depth + 1)


def _train_settings(found: dict[str, list]) -> tuple[Any, Any, Any]:
    """(optimizer, mesh, loop) of the job: found among the call's arguments, else the ones
    `lmscale.train.loop.train` is bound to by gin (or its defaults)."""
    import gin  # pylint: disable=g-import-not-at-top
    from lmscale.train import loop  # pylint: disable=g-import-not-at-top
    settings = _defaults(loop.train)
    try:
        settings.update(gin.get_bindings(loop.train))
    except ValueError:  # loop.train is not configured by the gin files
        pass
    return tuple((found.get(cls) or [settings[name]])[0] for cls, name in (
        ("OptimizerConfig", "optimizer"), ("MeshConfig", "mesh"), ("LoopConfig", "loop")))


def _specs(found: dict[str, list]) -> list:
    """Every RunSpec the job trains: given ones, a LadderConfig's, a study's ladder."""
    specs = list(found.get("RunSpec", []))
    ladders = list(found.get("LadderConfig", []))
    for config in found.get("StudyConfig", []):
        if callable(getattr(config, "ladder", None)):
            ladders.append(config.ladder())
    for ladder in ladders:
        specs = [s for s in specs if s is not ladder.template] + ladder.specs()
    return specs


_STRUCTURE_CHECKED: set[str] = set()  # job descriptions already checked in this process


def check_structure(values: dict[str, Any]) -> None:
    """Mesh, batch, heads, warmup, data and sampler checks of every run the configured
    call's arguments describe (`lmscale.train.preflight`), all at once, before it runs.

    Raises:
      ConfigError: every problem, each naming the field, the run and what to do.
    """
    import jax  # pylint: disable=g-import-not-at-top
    from lmscale.data import registry  # pylint: disable=g-import-not-at-top
    from lmscale.train import preflight as preflight_lib  # pylint: disable=g-import-not-at-top
    if values.get("mode") in ("plan", "predict"):
        return  # trains nothing; may plan for (or refit runs of) another machine's mesh
    found: dict[str, list] = {}
    _collect(values, found)
    specs = _specs(found)
    samplers = found.get("PassUntilConfig", [])
    if not specs and not samplers:
        return
    optimizer, mesh, loop = _train_settings(found)
    key = repr((specs, samplers, optimizer, mesh, loop))
    if key in _STRUCTURE_CHECKED:
        return
    problems = []
    if specs:
        problems += preflight_lib.check_runs(specs, optimizer, mesh, loop, jax.device_count(),
                                             jax.process_count())
        workdir = values.get("workdir") or (FLAGS.workdir if FLAGS.is_parsed() else None)
        if isinstance(workdir, (str, os.PathLike)):  # a ladder's runs, or a study's runs/
            parents = [workdir, os.path.join(workdir, "runs")]
            problems += preflight_lib.check_existing_runs(specs, parents)
    names = {"tasks": {}, "corpora": {}, "vocab_specs": {}}
    _names_in(values, TASK_FIELDS, names, "")
    new_tokens = {}
    for name in names["tasks"]:
        try:
            task = registry.get_eval_task(name)
        except (KeyError, ValueError):
            continue  # reported by `preflight`
        if task.checker is not None:
            new_tokens[name] = task.max_new_tokens
    models = list({id(s.model): s.model for s in specs}.values())
    for config in samplers:
        problems += preflight_lib.check_sampler(models, config.num_slots, config.batch_size,
                                                new_tokens)
    preflight_lib.raise_problems(list(dict.fromkeys(problems)))
    _STRUCTURE_CHECKED.add(key)


def check_call(selector: str, kwargs: dict, label: str) -> None:
    """The checks `configured` runs before a call (required macros, then `preflight`)."""
    import gin  # pylint: disable=g-import-not-at-top
    missing = unset_required(selector, skip=kwargs, where=label)
    if missing:
        names = sorted({m.rsplit(" ", 1)[-1] for m in missing})
        raise GinConfigError(
            f"required gin macro(s) not set: {', '.join(names)} ({'; '.join(missing)}); "
            f"set each in the study's gin file or on the command line, e.g. "
            f"--gin.{names[0]}=<value>")
    found = {"tasks": {}, "corpora": {}, "vocab_specs": {}}
    fields = TASK_FIELDS + CORPUS_FIELDS + VOCAB_FIELDS
    _names_in({**gin.get_bindings(selector), **kwargs}, fields, found, label)
    key = tuple(tuple(sorted(found[k])) for k in ("tasks", "corpora", "vocab_specs"))
    if key not in _PREFLIGHTED:
        preflight(*key, where={**found["tasks"], **found["corpora"], **found["vocab_specs"]})
        _PREFLIGHTED.add(key)


# Errors whose message names the bad input; the binaries print them without a traceback.
_INPUT_ERRORS = ("GinConfigError", "ConfigError", "DataError")


def _excepthook(kind, value, tb) -> None:
    """Bad input (one of `_INPUT_ERRORS`, whose message names the culprit) prints as one
    message, without a traceback (LMSCALE_TRACEBACK=1 shows it); anything else as usual."""
    is_input = any(c.__name__ in _INPUT_ERRORS for c in kind.__mro__)
    if is_input and os.environ.get("LMSCALE_TRACEBACK") != "1":
        sys.stderr.write(f"FATAL {kind.__name__}: {value}\n(set LMSCALE_TRACEBACK=1 for the "
                         f"traceback)\n")
        return
    sys.__excepthook__(kind, value, tb)


def start(argv) -> str:
    """The common prologue of the binaries: flags checked, logging to the workdir's log
    file (`lmscale.logs.setup`), multi-host started, the persistent compilation cache on,
    gin parsed; returns the resolved configuration text."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    check_workdir(FLAGS.workdir)
    sys.excepthook = _excepthook
    cache_dir = start_console_and_cache(FLAGS.workdir, console_mode(),
                                        FLAGS.compilation_cache_dir)
    platform = runtime.quiet_accelerator_probes()  # before JAX or TensorFlow is imported
    tuned = runtime.tune_host_allocator()  # before JAX starts its CPU threads
    logging.info("host allocator tuned for XLA:CPU: %s; platform: %s", tuned, platform)
    initialize_distributed()
    logging.info("persistent compilation cache: %s", compilation.enable_cache(cache_dir))
    return parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)


def check_workdir(workdir: str) -> None:
    """Raises app.UsageError when `workdir` is a file, or cannot be created or written."""
    path = pathlib.Path(workdir).expanduser()
    if path.exists() and not path.is_dir():
        raise app.UsageError(f"--workdir={workdir} is a file, not a directory: give a "
                             f"directory (it is created when missing)")
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        raise app.UsageError(f"--workdir={workdir}: {existing} is a file, so the directory "
                             f"cannot be created; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise app.UsageError(f"--workdir={workdir}: {existing} is not writable by this user; "
                             f"give a directory you can write")


def console_mode() -> str:
    """--console, or absl's -v/--verbosity when only that is given (0: info, 1+: debug)."""
    if FLAGS["verbosity"].present and not FLAGS["console"].present:
        return "debug" if FLAGS.verbosity >= 1 else "info"
    return FLAGS.console


def start_console_and_cache(workdir: str, console: str = "quiet",
                            cache_dir: str | None = None) -> str:
    """Log file under `workdir/logs`, the console's first line (where the log and cache
    are); returns the compilation cache directory ("" = off)."""
    binary = pathlib.Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "lmscale"
    path = logs.setup(workdir, binary, console, native_to_file=True)
    cache_dir = compilation.default_cache_dir(workdir) if cache_dir is None else cache_dir
    logs.console_write(f"{binary}: log in {path}; compilation cache "
                       f"{cache_dir or 'off'}" +
                       ("; --console=info shows the library detail" if console == "quiet"
                        else ""))
    return cache_dir


def initialize_distributed() -> None:
    """Starts multi-host JAX if asked; must run before any other JAX call."""
    import jax  # pylint: disable=g-import-not-at-top
    if FLAGS.coordinator_address or FLAGS.distributed:
        if os.environ.get("JAX_PLATFORMS", "") == "cpu" or FLAGS.coordinator_address:
            # CPU devices of different processes need a collectives backend.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id)
    logs.set_primary(jax.process_index() == 0)
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
