"""The surfaces over inference ask the task: prediction CSV layouts, pipeline names and options, HTTP
routes and `augment` formats come from each registered task (no model needed here)."""
from __future__ import annotations

import pytest

from transferkit import tasks
from transferkit.core.errors import UserError
from transferkit.inference import write_predictions

CLS = [{"text": "a good, film", "label": "pos", "confidence": 0.9, "probs": {"neg": 0.1, "pos": 0.9}},
       {"text": "bad", "label": "neg", "confidence": 0.75, "probs": {"neg": 0.75, "pos": 0.25}}]
NER = [{"text": "Jörg in Paris", "entities": [{"entity_group": "PER", "word": "Jörg", "start": 0, "end": 4}]},
       {"text": "nothing", "entities": []}]
ENTITY_CELL = '"[{""entity_group"": ""PER"", ""word"": ""Jörg"", ""start"": 0, ""end"": 4}]"'


def _adapter(rows: list[dict], name: str) -> list[dict]:
    return [{"text": r["text"], "adapter": name, **{k: v for k, v in r.items() if k != "text"}} for r in rows]


def _csv(tmp_path, rows, task_or_tasks, labels=()) -> list[str]:
    path = tmp_path / "p.csv"
    write_predictions(path, rows, task_or_tasks, labels)
    return path.read_text(encoding="utf-8").splitlines()


def test_one_run_csv_columns_come_from_its_task(tmp_path):
    assert _csv(tmp_path, CLS, tasks.get("classify"), ["neg", "pos"]) == [
        "text,label,confidence,p_neg,p_pos", '"a good, film",pos,0.900000,0.100000,0.900000',
        "bad,neg,0.750000,0.750000,0.250000"]
    assert _csv(tmp_path, NER, tasks.get("ner"), ["O", "B-PER"]) == [
        "text,entities", f"Jörg in Paris,{ENTITY_CELL}", "nothing,[]"]


def test_several_runs_csv_keeps_the_shared_columns_and_adds_each_present_tasks_own(tmp_path):
    cls, ner = tasks.get("classify"), tasks.get("ner")
    assert _csv(tmp_path, _adapter(CLS, "a"), [cls, cls]) == [
        "text,adapter,label,confidence,probs", '"a good, film",a,pos,0.900000,"{""neg"": 0.1, ""pos"": 0.9}"',
        'bad,a,neg,0.750000,"{""neg"": 0.75, ""pos"": 0.25}"']
    # a tagger's rows first: the columns still follow the registry, not the rows
    mixed = _csv(tmp_path, _adapter(NER[:1], "t") + _adapter(CLS[1:], "a"), [ner, cls])
    assert mixed == ["text,adapter,label,confidence,probs,entities", f"Jörg in Paris,t,,,,{ENTITY_CELL}",
                     'bad,a,neg,0.750000,"{""neg"": 0.75, ""pos"": 0.25}",']
    assert _csv(tmp_path, _adapter(NER[1:], "t"), [ner]) == ["text,adapter,label,confidence,probs,entities",
                                                             "nothing,t,,,,[]"]


def test_jsonl_is_the_rows_whatever_the_task(tmp_path):
    path = tmp_path / "p.jsonl"
    write_predictions(path, NER, tasks.get("ner"))
    assert path.read_text(encoding="utf-8").splitlines()[0].startswith('{"text": "Jörg in Paris", "entities"')


def test_a_task_without_a_csv_layout_says_so():
    with pytest.raises(UserError, match="base predictions have no CSV layout"):
        type("Base", (tasks.Task,), {"name": "base"})().csv_header([])


def test_every_pipeline_name_opens_its_task_and_the_language_model_pipelines_stay():
    from transferkit.inference.pipelines import _kinds
    kinds = _kinds()
    assert list(kinds) == ["text-classification", "sentiment-analysis", "text-generation", "token-classification",
                           "ner", "fill-mask"]
    # a model that is not a fine-tuned run opens as the language-model pipeline; a generation run through its task
    assert kinds["text-generation"].__name__ == "TextGenerationPipeline"
    assert kinds["fill-mask"].__name__ == "FillMaskPipeline"
    assert kinds["sentiment-analysis"].name == "classify" and kinds["ner"].name == "ner"
    # text-classification opens classify's runs and those of the tasks that share its pipeline (pair, ...)
    assert kinds["text-classification"].name == "classify"
    assert {n for n in tasks.TASKS if "text-classification" in tasks.get(n).pipeline_names} == {
        "classify", "pair", "regression", "multilabel"}
    assert tasks.get("classify").pipeline_options == ("top_k", "function_to_apply")
    assert tasks.get("ner").pipeline_options == ("aggregation_strategy",)
    with pytest.raises(UserError, match="aggregation_strategy 'best': use one of"):
        tasks.get("ner").check_pipeline_options({"aggregation_strategy": "best"})


def test_each_task_adds_its_own_routes():
    from fastapi.testclient import TestClient

    from transferkit.serving.app import create_app
    from transferkit.serving.models import ModelSet
    app = create_app(ModelSet({}))
    paths = [getattr(r, "path", "") for r in app.routes]
    assert {"/v1/classify", "/predict", "/v1/ner", "/v1/models", "/health"} <= set(paths)
    assert paths.index("/v1/classify") < paths.index("/predict") < paths.index("/v1/ner") < paths.index("/v1/models")
    with TestClient(app) as c:  # the request models moved with the routes: still strict
        r = c.post("/v1/ner", json={"model": "x", "input": "a", "extra": 1})
        assert r.status_code == 422 and r.json()["error_type"] == "Validation"
        assert c.post("/v1/classify", json={"model": "x", "input": "a"}).status_code == 404


def test_augment_formats_and_unknown_task(tmp_path):
    from transferkit.augmentation.write import write_augmented
    assert tasks.get("classify").augment_formats == (".csv", ".tsv", ".jsonl")
    assert tasks.get("ner").augment_formats == (".jsonl",)
    with pytest.raises(UserError, match=r"must end in \.jsonl$"):
        write_augmented("x.conll", "eda:swap=0.1", tmp_path / "o.csv", task="ner")
    with pytest.raises(UserError, match="augment: unknown task 'nope'; choose one of: classify, generate, multilabel, "
                                        "ner, pair, regression"):
        write_augmented("x.csv", "eda:swap=0.1", tmp_path / "o.csv", task="nope")
