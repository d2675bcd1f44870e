"""The compile options are defined once (``qcc.options``): the API's keywords, the CLI's flags and
the docstrings are built from ``CompileOptions``' fields and cannot drift from them."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer

import qcc
from qcc.cli import app, main
from qcc.errors import OptionError
from qcc.options import (
    ActivationType,
    CompileOptions,
    Target,
    ToleranceMetric,
    WeightRounding,
    cli_flags,
    field_default,
    option_infos,
)

FIELDS = [f.name for f in dataclasses.fields(CompileOptions)]
# qcc.compile's keywords that are not options: what to compile from, and how to run.
NOT_OPTIONS = {"model", "calibration", "strict", "progress"}


def click_params(command: str) -> dict[str, object]:
    """The click parameters typer built for ``command``, by name."""
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def test_every_option_is_set_by_exactly_one_cli_flag_with_the_fields_default():
    set_by: dict[str, list[str]] = {name: [] for name in FIELDS}
    params = click_params("compile")
    for parameter, (field, flag) in cli_flags("compile").items():
        built = params[parameter]
        assert built.help == flag.help and flag.help, parameter
        # typer's default for the flag, read back as options, is the field's own default.
        fields = CompileOptions.from_cli({parameter: built.default})
        parsed = flag.parse(built.default) if flag.parse else {field: built.default}
        for name in parsed:
            set_by[name].append(parameter)
            assert getattr(fields, name) == field_default(name), (parameter, name)
    assert {name: flags for name, flags in set_by.items() if len(flags) != 1} == {}
    assert CompileOptions.from_cli({p: params[p].default for p in cli_flags("compile")}) == CompileOptions()


def test_the_api_takes_exactly_the_fields_with_their_defaults():
    signature = inspect.signature(qcc.compile).parameters
    assert set(signature) == set(FIELDS) | NOT_OPTIONS
    for name in FIELDS:
        default = field_default(name)
        shown = signature[name].default
        assert shown == getattr(default, "value", default) or (shown is None and default == {}), name


def test_help_documents_every_option_from_its_metadata():
    docs = [" ".join(doc.split()) for doc in (qcc.compile.__doc__, CompileOptions.__doc__)]
    for name, info in option_infos().items():
        entry = f"{name}: {' '.join(info.doc.split())}"
        assert all(entry in doc for doc in docs), name
    assert "{options}" not in qcc.compile.__doc__ and "{target}" not in qcc.compile.__doc__


def test_commands_take_the_options_their_metadata_names():
    assert set(cli_flags("analyze")) == {"target", "method", "exclude"}
    compile_params, analyze_params = click_params("compile"), click_params("analyze")
    assert set(cli_flags("compile")) <= set(compile_params)
    for name in cli_flags("analyze"):  # analyze's are the same options, same help, as compile's
        assert analyze_params[name].opts == compile_params[name].opts
        assert analyze_params[name].help == compile_params[name].help


def test_unknown_keyword_is_an_option_error_with_did_you_mean():
    with pytest.raises(OptionError, match="unknown option.*per_chanel.*did you mean per_channel"):
        qcc.compile("never-read.onnx", per_chanel=False)
    with pytest.raises(OptionError, match="did you mean tolerance"):
        CompileOptions.from_kwargs(tolerence=0.01)


def test_from_kwargs_reads_every_form_a_python_user_writes():
    options = CompileOptions.from_kwargs(
        target="tflite",
        tolerance="relative:0.05",
        exclude="Softmax",
        activation_type="int8",
        input_shapes=None,
        weight_rounding="nearest",
    )
    assert options.target == "tflite" and options.exclude == ("Softmax",) and options.input_shapes == {}
    assert options.tolerance == 0.05 and options.tolerance_metric == ToleranceMetric.RELATIVE
    assert options.activation_type == ActivationType.INT8 and options.weight_rounding == WeightRounding.NEAREST
    assert CompileOptions.from_kwargs(tolerance="off").tolerance is None
    assert CompileOptions.from_kwargs(tolerance=0.01, tolerance_metric="relative").tolerance_metric == "relative"
    assert CompileOptions.from_kwargs(input_shapes={"x": [1, 3]}).input_shapes == {"x": (1, 3)}
    assert CompileOptions.from_kwargs() == CompileOptions()
    with pytest.raises(OptionError, match="precision='int3' is not valid"):
        CompileOptions.from_kwargs(precision="int3")
    with pytest.raises(OptionError, match="is not a bound"):
        CompileOptions.from_kwargs(tolerance="loose")
    assert CompileOptions.from_kwargs(method=None).method is None  # the target's default methods
    with pytest.raises(OptionError, match="weights=None is not valid"):  # None is no storage
        CompileOptions.from_kwargs(weights=None)


def test_from_cli_reads_the_flags_values():
    options = CompileOptions.from_cli(
        {
            "target": Target.TFLITE,
            "per_tensor": True,
            "no_verify": True,
            "max_samples": 3,
            "tolerance": "relative:0.05",
            "exclude": ["Softmax", "/head/fc"],
            "input_shape": ["x=1,3,48,320"],
            "equalize": False,
        }
    )
    assert options.target == "tflite" and type(options.target) is str
    assert not options.per_channel and not options.verify and options.max_calibration_samples == 3
    assert options.tolerance == 0.05 and options.tolerance_metric == ToleranceMetric.RELATIVE
    assert options.exclude == ("Softmax", "/head/fc") and options.input_shapes == {"x": (1, 3, 48, 320)}
    assert options.equalize is False
    with pytest.raises(TypeError, match="per_channel"):  # a field name is not a flag's parameter
        CompileOptions.from_cli({"per_channel": False})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compile", "m.onnx", "-o", "x.onnx", "--weight-rounding", "gtpq"], "use --weight-rounding gptq"),
        (["compile", "m.onnx", "-o", "x.onnx", "--io", "fp32"], "use --io float"),
        (["analyze", "m.onnx", "-c", "c.npz", "-t", "tensorrt"], "use --target trt"),
        (["analyze", "m.onnx", "-c", "c.npz", "--methd", "minmax"], "did you mean --method?"),
    ],
)
def test_generated_flags_keep_the_one_line_errors(capsys, args, expected):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0]


def test_target_specific_options_name_their_targets_and_agree_with_the_specs():
    from qcc.backends import get_backend

    for name, info in option_infos().items():
        assert set(info.targets) <= {t.value for t in Target}, name
        if info.targets and info.cli is not None:
            assert info.cli.help.startswith(f"{', '.join(info.targets)}: "), name
        for target in info.targets:
            assert f"``{target}``" in info.doc, name
    # latency_budget acts on the targets whose runtime qcc.latency prices.
    priced = {t.value for t in Target if get_backend(t.value).spec.priced_in_onnxruntime}
    assert set(option_infos()["latency_budget"].targets) == priced
    # dynamic acts on the targets whose spec runs dynamic models, and check_options refuses the others.
    assert set(option_infos()["dynamic"].targets) == {t.value for t in Target if get_backend(t.value).spec.dynamic}
    for target in Target:
        spec = get_backend(target.value).spec
        if target.value not in option_infos()["dynamic"].targets:
            with pytest.raises(OptionError, match="no dynamic"):
                spec.check_options(CompileOptions(target=target.value, dynamic=True))


@pytest.mark.parametrize(("keyword", "value"), [("io", "int8"), ("nhwc_io", True), ("input_shapes", {"x": [1, 8]})])
def test_an_option_of_another_target_is_refused_not_ignored(keyword, value):
    """``io="int8"`` on ``ort`` used to be ignored silently: the user got float I/O."""
    from qcc.backends import get_backend

    options = CompileOptions.from_kwargs(**{keyword: value})
    for target in Target:
        spec = get_backend(target.value).spec
        chosen = CompileOptions.from_kwargs(target=target.value, **{keyword: value})
        if target.value in option_infos()[keyword].targets:
            spec.check_options(chosen)
        else:
            with pytest.raises(OptionError, match=f"acts on {option_infos()[keyword].targets[0]} only"):
                spec.check_options(chosen)
    assert options != CompileOptions()  # the value is not the default (else nothing would be refused)
