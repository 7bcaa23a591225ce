"""The benchmark's figures by concern; benchmarks/bench.py runs them (docs/benchmarks.md).

runner: process timing, ratios and the report; sqlite: the programs against the lesson's
scripts, the proof and a million rows; verification: db-verify's; postgres: the same on a
server of its own; cli: the command line. The raw floors and wrappers are ../scripts/.
"""
