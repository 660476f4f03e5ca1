"""Sonae's JSON-LD ``@context`` for NGSI-LD (ETSI GS CIM 009) and the vocabulary of its own terms.

Sonae serves one context, ``{base}/ngsi-ld/v1/contexts/sonae.jsonld``: the NGSI-LD core context (v1.8),
then the Smart Data Models contexts of the models it uses (dataModel.Environment for WaterObserved,
dataModel.Device, dataModel.Alert, dataModel.PointOfInterest), then Sonae's own terms, each an IRI under
``{base}/ngsi-ld/v1/vocab#`` (a JSON document Sonae serves, describing every term in Japanese and English).
The order follows the SDM examples (core first); none of Sonae's terms redefines a protected core term.
"""

from __future__ import annotations

from typing import Any

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
SDM_CONTEXTS = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Alert/master/context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.PointOfInterest/master/context.jsonld",
)
CONTEXT_PATH = "/ngsi-ld/v1/contexts/sonae.jsonld"
VOCAB_PATH = "/ngsi-ld/v1/vocab"
#: JSON-LD's context link relation (ETSI GS CIM 009 §6.3.5)
LINK_REL = "http://www.w3.org/ns/json-ld#context"

#: Sonae's own terms: name → (kind, Japanese, English). Kinds: "Property", "Relationship", "type".
TERMS: dict[str, tuple[str, str, str]] = {
    "MunicipalityWarningLevel": ("type", "市町村の現在の警戒レベル", "A municipality's current alert level (警戒レベル)"),
    "riverLevel": ("Property", "水位（観測所の基準面, m; 負の値もあり）",
                   "River stage in metres against the gauge's own datum (may be negative, unlike SDM waterLevel)"),
    "river": ("Property", "河川名", "River name"),
    "gaugeType": ("Property", "水位計の種別（flood_forecast: 洪水予報/水位周知河川, crisis: 危機管理型水位計）",
                  "Gauge type: flood_forecast (four thresholds) or crisis (危機管理型, three)"),
    "standbyWaterLevel": ("Property", "水防団待機水位 (m)", "Flood-fighting standby stage (m, gauge datum)"),
    "cautionWaterLevel": ("Property", "氾濫注意水位 (m)", "Flood caution stage (m), 警戒レベル2相当"),
    "evacuationWaterLevel": ("Property", "避難判断水位 (m)", "Evacuation judgement stage (m), 警戒レベル3相当"),
    "dangerWaterLevel": ("Property", "氾濫危険水位 (m)", "Flood danger stage (m), 警戒レベル4相当"),
    "observationStartWaterLevel": ("Property", "観測開始水位 (m, 危機管理型)", "Observation start stage (m, crisis gauge)"),
    "crisisWaterLevel": ("Property", "危険水位 (m, 危機管理型)", "Danger stage (m, crisis gauge)"),
    "overflowWaterLevel": ("Property", "氾濫開始水位 (m, 危機管理型)", "Overflow stage (m, crisis gauge)"),
    "missingAtOrBelowWaterLevel": ("Property", "欠測とみなす水位 (m; この値以下は欠測); 欠測値のない水位計は属性なし",
                                   "Stage (m, gauge datum) at or below which a reading is 欠測, a missing value; "
                                   "absent for a gauge with no such sentinel"),
    "warningLevel": ("Property", "警戒レベル（河川は警戒レベル相当）; 発表がないときは属性なし",
                     "警戒レベル 2-5 in force (for a gauge: the 相当 level); absent when none"),
    "municipalityCode": ("Property", "全国地方公共団体コード（6桁）", "Japanese local government code (6 digits)"),
    "exercise": ("Property", "訓練データ", "True for drill (exercise) data, never real"),
    "capIdentifier": ("Property", "現在の CAP メッセージの identifier", "identifier of the alert's current CAP 1.2 message"),
    "capDocument": ("Property", "CAP 1.2 文書の URL", "URL of the alert's CAP 1.2 document"),
    "alertCondition": ("Property", "警報の条件 (river_level, evacuation_order)", "Alert condition"),
    "shelterHazards": ("Property", "対応する災害種別（指定緊急避難場所）", "Hazards the shelter is designated for"),
    "shelterStatus": ("Property", "開設状況 (open / closed)", "Whether the shelter is open"),
}


def context_url(base: str) -> str:
    """The absolute URL of Sonae's context document for a deployment reachable at ``base``."""
    return base.rstrip("/") + CONTEXT_PATH


def vocab_url(base: str) -> str:
    return base.rstrip("/") + VOCAB_PATH + "#"


def context_document(base: str) -> dict[str, Any]:
    """Sonae's ``@context`` document (served as ``application/ld+json``)."""
    ns = vocab_url(base)
    own: dict[str, Any] = {"sonae": ns}
    for term, (kind, _, _) in TERMS.items():
        own[term] = {"@id": f"sonae:{term}", "@type": "@id"} if kind == "Relationship" else f"sonae:{term}"
    return {"@context": [CORE_CONTEXT, *SDM_CONTEXTS, own]}


def vocabulary(base: str) -> dict[str, Any]:
    """The vocabulary document the term IRIs point into: one entry per term, in Japanese and English."""
    ns = vocab_url(base)
    return {"@context": {"rdfs": "http://www.w3.org/2000/01/rdf-schema#",
                         "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "label": {"@id": "rdfs:label",
                                                                                       "@container": "@language"}},
            "@graph": [{"@id": ns + term, "@type": "rdfs:Class" if kind == "type" else "rdf:Property",
                        "label": {"ja": ja, "en": en}} for term, (kind, ja, en) in TERMS.items()]}


def link_header(base: str) -> str:
    """The ``Link`` header naming Sonae's context (for ``application/json`` bodies)."""
    return f'<{context_url(base)}>; rel="{LINK_REL}"; type="application/ld+json"'
