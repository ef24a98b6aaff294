"""Every config in every group composes into the typed schema; bad values fail naming the key."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from harness.core.config import ConfigError, RunConfig, resolve_data_dir, to_run_config

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
# `tuning` holds per-model presets selected by the model choice, `search` searches added with +search=NAME
# (tests/test_search.py): neither is a section of RunConfig.
OPTIONS = [(g, yaml.stem) for g in GROUPS if g not in ("tuning", "search")
           for yaml in sorted((CONF / g).glob("*.yaml"))]
# Options that need the user's own values (an endpoint, a model name) before they validate.
USER_SUPPLIED = {("judge", "openai"): ["judge.model=served-model", "judge.base_url=http://localhost:8000/v1"]}


def test_every_group_of_the_design_exists():
    assert {"model", "method", "data", "hardware", "tracker", "qlora", "eval"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}", *USER_SUPPLIED.get((group, option), []))
    run_cfg = to_run_config(cfg)
    assert isinstance(run_cfg, RunConfig)
    section = getattr(run_cfg, group)
    if hasattr(section, "name"):
        assert section.name == option, f"conf/{group}/{option}.yaml must set name: {option}"


def test_default_is_the_embedded_model_on_the_sample(compose_cfg):
    cfg = to_run_config(compose_cfg())
    assert (cfg.model.name, cfg.method.name, cfg.data.name, cfg.hardware.name) == (
        "smollm2_135m", "base", "hr_handbook", "cpu")
    assert resolve_data_dir(cfg.data).joinpath("train.jsonl").is_file()


def test_real_targets_name_hub_ids_and_lora_targets(compose_cfg):
    expected = {
        "llama3_8b": "meta-llama/Meta-Llama-3-8B-Instruct",
        "mistral_7b_v02": "mistralai/Mistral-7B-Instruct-v0.2",
        "mistral_7b_v03": "mistralai/Mistral-7B-Instruct-v0.3",
        "gemma_2b": "google/gemma-2b-it",
        "phi_2": "microsoft/phi-2",
        "phi3_mini": "microsoft/Phi-3-mini-4k-instruct",
        "llama2_7b_chat": "meta-llama/Llama-2-7b-chat-hf",
    }
    for name, hf_id in expected.items():
        model = to_run_config(compose_cfg(f"model={name}")).model
        assert model.hf_id == hf_id
        assert 1.0 < model.params_b < 9.0
        assert model.lora_target_modules
    assert "qkv_proj" in to_run_config(compose_cfg("model=phi3_mini")).model.lora_target_modules
    assert not to_run_config(compose_cfg("model=gemma_2b")).model.supports_system_role
    assert not to_run_config(compose_cfg("model=phi_2")).model.has_chat_template


def test_sweepable_hyperparameters_override(compose_cfg):
    cfg = to_run_config(compose_cfg("qlora.r=64", "qlora.lr=1e-4", "eval.max_new_tokens=16"))
    assert (cfg.qlora.r, cfg.qlora.lr, cfg.eval.max_new_tokens) == (64, 1e-4, 16)


def test_wrong_type_fails_at_compose_naming_the_key(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="Error merging override qlora.r=eight") as info:
        compose_cfg("qlora.r=eight")
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError)
    assert "Value 'eight' of type 'str' could not be converted to Integer" in str(cause)
    assert "full_key: qlora.r\n" in str(cause)


def test_unknown_key_fails_at_compose(compose_cfg):
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'qlora\.rank'"):
        compose_cfg("qlora.rank=8")


def test_unknown_option_fails_at_compose(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="Could not find 'model/gpt5'") as info:
        compose_cfg("model=gpt5")
    assert "Available options in 'model':\n\tgemma3_270m\n" in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("qlora.r=0", "qlora.r"),
        ("qlora.lr=-1", "qlora.lr"),
        ("qlora.dropout=1.5", "qlora.dropout"),
        ("qlora.bnb_4bit_quant_type=int3", "qlora.bnb_4bit_quant_type"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("data.prompt_template='{nope}'", "data.prompt_template"),
        ("data.rag_prompt_template='{question} only'", "data.rag_prompt_template"),
        ("retrieval.top_k=0", "retrieval.top_k"),
        ("hardware.usd_per_hour=-2", "hardware.usd_per_hour"),
        ("fail_at=everywhere", "fail_at"),
    ],
)
def test_out_of_range_values_name_the_key(compose_cfg, override, key):
    with pytest.raises(ConfigError) as info:
        to_run_config(compose_cfg(override))
    assert str(info.value).startswith(key)


def test_enum_fields_reject_unknown_values(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="Error merging override hardware.accelerator=tpu") as info:
        compose_cfg("hardware.accelerator=tpu")
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError)
    assert "Invalid value 'tpu', expected one of [cpu, cuda]" in str(cause)
    assert "full_key: hardware.accelerator\n" in str(cause)


MODEL_PRESETS = sorted(p.stem for p in (CONF / "tuning" / "model").glob("*.yaml"))
MODEL_HARDWARE_PRESETS = sorted(p.stem for p in (CONF / "tuning" / "model_hardware").glob("*.yaml"))


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_every_model_tuning_preset_belongs_to_a_model(compose_cfg, preset):
    assert (CONF / "model" / f"{preset}.yaml").is_file(), f"conf/tuning/model/{preset}.yaml names no model"
    assert isinstance(to_run_config(compose_cfg(f"model={preset}")), RunConfig)


@pytest.mark.parametrize("preset", MODEL_HARDWARE_PRESETS)
def test_every_model_hardware_preset_is_selected_by_its_pair(compose_cfg, preset):
    pairs = [(m.stem, h.stem) for m in (CONF / "model").glob("*.yaml") for h in (CONF / "hardware").glob("*.yaml")
             if f"{m.stem}_{h.stem}" == preset]
    assert len(pairs) == 1, f"conf/tuning/model_hardware/{preset}.yaml matches no single model_hardware pair"
    model, hardware = pairs[0]
    preset_values = OmegaConf.load(CONF / "tuning" / "model_hardware" / f"{preset}.yaml")["qlora"]
    qlora = to_run_config(compose_cfg(f"model={model}", f"hardware={hardware}")).qlora
    assert all(getattr(qlora, key) == value for key, value in preset_values.items())


@pytest.mark.parametrize("preset", ["qlora_paper", "fast", "long_context"])
def test_qlora_presets_build_on_the_default(compose_cfg, preset):
    qlora = to_run_config(compose_cfg(f"qlora={preset}", "model=llama3_8b")).qlora
    assert qlora.seed == 42 and qlora.load_in_4bit  # inherited from qlora/default.yaml
    assert to_run_config(compose_cfg("qlora=qlora_paper", "model=llama3_8b")).qlora.r == 64


def test_model_specific_tuning_layers_over_qlora_and_the_cli_wins(compose_cfg):
    assert to_run_config(compose_cfg("model=smollm2_135m")).qlora.lr == 1e-3
    assert to_run_config(compose_cfg("model=llama3_8b")).qlora.lr == 2e-4
    assert to_run_config(compose_cfg("model=smollm2_135m", "qlora.lr=5e-4")).qlora.lr == 5e-4


@pytest.mark.parametrize("preset", MODEL_HARDWARE_PRESETS)
def test_every_model_hardware_preset_passes_the_memory_preflight(compose_cfg, preset):
    from harness.cell.preflight import preflight

    model, hardware = next((m.stem, h.stem) for m in (CONF / "model").glob("*.yaml")
                           for h in (CONF / "hardware").glob("*.yaml") if f"{m.stem}_{h.stem}" == preset)
    for method in ("instruct", "instruct_rag"):
        estimate = preflight(to_run_config(compose_cfg(f"model={model}", f"hardware={hardware}", f"method={method}")))
        assert estimate.fits and estimate.total_gb < estimate.available_gb


def test_judge_options_say_what_the_user_must_supply(compose_cfg):
    with pytest.raises(ConfigError, match=r"judge.model: judge=openai needs the judge model's name"):
        to_run_config(compose_cfg("judge=openai"))
    with pytest.raises(ConfigError, match=r"judge.base_url: judge=openai needs the endpoint"):
        to_run_config(compose_cfg("judge=openai", "judge.model=m"))
    with pytest.raises(ConfigError, match=r"judge.api_key_env: must be the NAME of an environment variable"):
        to_run_config(compose_cfg("judge=ollama", "judge.api_key_env=" + "sk-" + "abc123.xyz"))
    with pytest.raises(ConfigError, match=r"judge.ragas_metrics: unknown \['faithfulnes'\]"):
        to_run_config(compose_cfg("judge=ollama", "judge.ragas_metrics=[faithfulnes]"))
    cfg = to_run_config(compose_cfg("judge=ollama"))
    assert cfg.judge.model and cfg.judge.temperature == 0.0 and cfg.judge.base_url is None
    assert to_run_config(compose_cfg()).judge.backend.value == "none"


def test_unknown_metric_in_data_config_fails_before_anything_runs(compose_cfg):
    from harness.cell.checks import check_metric_names

    with pytest.raises(ConfigError, match=r"data.metrics: unknown metric\(s\) \['rogue'\]; known: .*ragas"):
        check_metric_names(to_run_config(compose_cfg("data.metrics=[bleu,rogue]")))
    check_metric_names(to_run_config(compose_cfg("data.metrics=[bleu,ragas]")))


def test_judge_transport_settings_do_not_change_the_run_key(compose_cfg):
    from omegaconf import OmegaConf

    from harness.core.ledger import semantic_config

    def key_part(*overrides):
        return semantic_config(OmegaConf.to_container(compose_cfg(*overrides), resolve=True))

    judged = ("judge=ollama", "data.metrics=[rouge,ragas]")
    assert key_part(*judged) == key_part(*judged, "judge.concurrency=16", "judge.timeout_s=5")
    assert key_part(*judged) != key_part(*judged, "judge.model=llama3.1:70b")
    # Without a judged metric the judge does not matter at all.
    assert "judge" not in key_part("judge=ollama", "data.metrics=[rouge]")
    # data.allow_overlap permits scoring an overlapping set; it changes nothing a cell computes.
    assert key_part() == key_part("data.allow_overlap=true")


def test_harness_help_lists_the_harness_groups_and_the_dataset_builder_has_its_own_root():
    import subprocess
    import sys

    from datasets_gen.config import CONF_DIR as GEN_CONF

    done = subprocess.run([sys.executable, "-m", "harness", "--help"], cwd=CONF.parent, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    groups = done.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if ": " in line}
    # Every group under conf/ (Hydra's own hydra/ settings aside), nothing else.
    expected = {str(p.parent.relative_to(CONF)) for p in CONF.rglob("*.yaml")
                if p.parent != CONF and p.relative_to(CONF).parts[0] != "hydra"}
    assert listed == expected and {"model", "method", "tuning/model"} <= listed
    assert not {"backend", "recipe"} & listed and not any(name.startswith("datasets_gen") for name in listed)
    # The builder's groups live in its own config root, inside its package.
    assert {p.name for p in GEN_CONF.iterdir() if p.is_dir()} == {"backend", "recipe"}
    assert (GEN_CONF / "config.yaml").is_file() and not (CONF / "datasets_gen").exists()
