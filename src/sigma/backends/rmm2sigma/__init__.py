"""rmm2sigma's backends as a pySigma backend plugin, for sigma-cli and pySigma users.

The case-sensitive tests and kind-preserving value lists that rmm2sigma's targets write are
backend behaviour (a pipeline cannot change how a backend renders ``|cased`` or a list), so
sigma-cli users get them by choosing these backends with the pipelines of the originals:

``sigma convert --disable-pipeline-check -t rmm2sigma_kusto -p microsoft_xdr -p rmm2sigma_kusto
rules/`` (the check knows the originals' pipelines only by the originals' names); likewise
``rmm2sigma_splunk`` (with ``-p sysmon -p splunk_windows -p rmm2sigma_splunk``), ``rmm2sigma_esql``
and ``rmm2sigma_eql`` (with ``-p ecs_windows -p rmm2sigma_esql`` / ``rmm2sigma_eql``).
"""

from __future__ import annotations

from typing import ClassVar

from rmm2sigma.targets import elastic, kusto, splunk

__all__ = ["Rmm2SigmaEql", "Rmm2SigmaEsql", "Rmm2SigmaKusto", "Rmm2SigmaSplunk"]


# pySigma names a discovered backend by its ``identifier``: ours must not take the originals' names


class Rmm2SigmaKusto(kusto.Rmm2SigmaKustoBackend):
    identifier: ClassVar[str] = "rmm2sigma_kusto"


class Rmm2SigmaSplunk(splunk.Rmm2SigmaSplunkBackend):
    identifier: ClassVar[str] = "rmm2sigma_splunk"


class Rmm2SigmaEsql(elastic.Rmm2SigmaEsqlBackend):
    identifier: ClassVar[str] = "rmm2sigma_esql"


class Rmm2SigmaEql(elastic.Rmm2SigmaEqlBackend):
    identifier: ClassVar[str] = "rmm2sigma_eql"
