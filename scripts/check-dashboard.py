#!/usr/bin/env python3
"""Runs every query of dashboards/backtest-perf.json against a Prometheus server that
scraped a run (its HTTP API), with the dashboard's variables set to match everything, and
fails on a query Prometheus refuses or that returns nothing.

Usage: check-dashboard.py DASHBOARD.json PROMETHEUS_URL
"""
import json
import sys
import urllib.parse
import urllib.request


def main():
    path, base = sys.argv[1], sys.argv[2].rstrip("/")
    dashboard = json.load(open(path))
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    problems = []
    for expr in queries:
        query = expr.replace("$service", ".*").replace("$strategy", ".*").replace("$symbol", ".*")
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            answer = json.load(urllib.request.urlopen(url, timeout=10))
        except Exception as error:  # noqa: BLE001 - any failure is the answer
            problems.append(f"{expr}: {error}")
            continue
        if answer.get("status") != "success":
            problems.append(f"{expr}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            problems.append(f"{expr}: no data")
    if problems:
        sys.exit("check-dashboard: " + "\n  ".join(["queries that fail:"] + problems))
    print(f"check-dashboard: all {len(queries)} queries of {path} return data from the scraped run")


if __name__ == "__main__":
    main()
