"""The seed team: Chorus's demo agents, declared through the public API like any user's app.

It is the app a process runs when no `-A` / `CHORUS_APP` names another, so `make demo` and
`chorus run TEXT --pattern P` use it. Each of its workflows is named after its pattern.
"""

from __future__ import annotations

import chorus
from messages import (
    CodeReview,
    Critique,
    Draft,
    Judgement,
    MergedAnalysis,
    Plan,
    ResearchFindings,
    Summary,
    Synthesis,
    Verdict,
)

app = chorus.App("chorus")

ROUTER_TARGETS = ("research", "code_review", "summarizer", "critic")
PIPELINE_STEPS = ("research", "drafter", "critic")
ASPECTS = {
    "technical": "Analyse the technical side: feasibility, architecture, risks in the build.",
    "business": "Analyse the business side: value, cost, market and organisational impact.",
    "risks": "Analyse what could go wrong: failure modes, dependencies, worst cases.",
}
ANALYST_PERSPECTIVES = (
    "You are analyst 1: judge it as a pragmatic engineer who has to build and run it.",
    "You are analyst 2: judge it as a finance lead who has to pay for it.",
    "You are analyst 3: judge it as a risk officer who has to answer when it fails.",
    "You are analyst 4: judge it as the customer who has to use it.",
    "You are analyst 5: judge it as a competitor looking for its weak spots.",
)

app.agent(
    "router",
    purpose="Classifies a request and delegates it to one specialist.",
    instructions=(
        "You are a dispatcher. Classify the request and choose exactly one specialist agent "
        "to handle it, with a priority and a one-sentence reason."
    ),
    tier="fast",
    output=chorus.RouteDecision,
    max_tokens=512,
)
app.agent(
    "research",
    purpose="Investigates a question and reports findings with open questions.",
    instructions=(
        "You are a careful research analyst. Answer the request with verifiable findings, "
        "separate facts from judgement, and list what remains uncertain."
    ),
    output=ResearchFindings,
    max_tokens=2048,
)
app.agent(
    "code_review",
    purpose="Reviews source code for defects, risks and improvements.",
    instructions=(
        "You are a senior code reviewer. Point at concrete defects with their location and "
        "impact, then suggest improvements. Do not praise without reason."
    ),
    output=CodeReview,
    max_tokens=2048,
)
app.agent(
    "summarizer",
    purpose="Summarizes or condenses text, explanations and trade-offs.",
    instructions=(
        "You summarize faithfully: keep every important claim, add nothing that is not in "
        "the request, and prefer short plain sentences."
    ),
    output=Summary,
)
app.agent(
    "critic",
    purpose="Critiques a draft or plan and says whether it passes or needs revision.",
    instructions=(
        "You are a demanding critic. Judge the work against the request, name strengths and "
        "weaknesses, and answer pass only when nothing important is missing."
    ),
    tier="fast",
    output=Critique,
)
app.agent(
    "drafter",
    purpose="Writes (and revises) a draft from the request and earlier findings.",
    instructions=(
        "You write clear, well-structured drafts. Use the findings given as context, keep "
        "every claim traceable to them, and when a critique is given, fix what it names."
    ),
    output=Draft,
    max_tokens=4096,
)
app.agent(
    "merger",
    purpose="Reconciles parallel analyses, reporting contradictions instead of hiding them.",
    instructions=(
        "You merge analyses written independently. Never invent agreement: when two "
        "analyses disagree, list the contradiction and name both sides. Name any branch "
        "that failed or left a question open."
    ),
    output=MergedAnalysis,
    max_tokens=2048,
)
app.agent(
    "analyst",
    purpose="Assesses a proposal independently and votes APPROVE, REJECT or UNCERTAIN.",
    instructions=(
        "You assess the proposal on your own, from the perspective you are given. Vote "
        "APPROVE, REJECT or UNCERTAIN, with your confidence and concrete reasons."
    ),
    output=Verdict,
)
app.agent(
    "judge",
    purpose="Weighs independent verdicts and states the consensus, or that there is none.",
    instructions=(
        "You judge a set of independent verdicts. State APPROVE or REJECT only when the "
        "verdicts support it; otherwise SPLIT. Give your confidence, what they agree and "
        "disagree on, and a recommendation."
    ),
    output=Judgement,
)
app.agent(
    "orchestrator",
    purpose="Splits a task into independent subtasks for parallel workers.",
    instructions=(
        "You plan work for parallel workers. Split the request into independent subtasks, "
        "each with a short snake_case name and precise instructions. No overlaps."
    ),
    output=Plan,
)
app.agent(
    "synthesizer",
    purpose="Combines the workers' results into one answer and names the gaps.",
    instructions=(
        "You combine the results of parallel workers into one coherent answer, one section "
        "per subtask, and list the subtasks that failed or left gaps."
    ),
    output=Synthesis,
    max_tokens=4096,
)

app.workflow("route", chorus.route(ROUTER_TARGETS, router="router"))
app.workflow("pipeline", chorus.pipeline(*PIPELINE_STEPS))
app.workflow("fanout", chorus.fanout(ASPECTS, agent="research", merge="merger"))
app.workflow(
    "consensus",
    chorus.consensus(
        "analyst", "judge", perspectives=ANALYST_PERSPECTIVES[:3], quorum=2, review_below=0.6
    ),
)
app.workflow("evaluate", chorus.evaluate("drafter", "critic", max_rounds=2))
app.workflow("orchestrate", chorus.orchestrate("orchestrator", "research", "synthesizer"))
