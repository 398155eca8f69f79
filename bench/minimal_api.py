"""The baseline a user could write in ten lines: FastAPI + uvicorn calling the same RiskModel and
feature code as the service, with nothing else (no auth guard, no audit store, no metrics).

    RISK_BUNDLE=data/model/bundle uvicorn bench.minimal_api:app
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from models.bundle import InvalidDeclarations, RiskModel, score_declarations

app = FastAPI()
model = RiskModel.load(Path(os.environ["RISK_BUNDLE"]))


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.post("/score")
async def score(request: Request) -> JSONResponse:
    body = await request.json()
    try:
        results = score_declarations(model, pd.DataFrame(body["declarations"]), 3)
    except InvalidDeclarations as invalid:
        return JSONResponse({"errors": invalid.failures.to_dict(orient="records")}, status_code=422)
    return JSONResponse({"results": results.to_dict(orient="records")})
