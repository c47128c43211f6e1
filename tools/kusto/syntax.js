#!/usr/bin/env node
// Syntax-only check with Microsoft's Kusto.Language parser: no schema, no binding.
//
// stdin:  a JSON array of query texts
// stdout: a JSON array with, per query (same order), its syntax errors as
//         {"code", "message", "start", "length"} (start/length in UTF-16 code units).
// Kusto.Language's own parse (KustoCode.Parse) reports only what the grammar rejects, so an
// unknown table or column (binding) never shows here.
'use strict';

const fs = require('fs');

require('@kusto/language-service-next/bridge.min.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');

const K = globalThis.Kusto.Language;

function syntaxErrors(query) {
  if (typeof query !== 'string') {
    throw new Error('every query must be a string');
  }
  const code = K.KustoCode.Parse(query, K.GlobalState.Default);
  return globalThis.Bridge.toArray(code.GetDiagnostics())
    .filter((d) => d.Severity === 'Error')
    .map((d) => ({ code: d.Code, message: d.Message, start: d.Start, length: d.Length }));
}

try {
  const queries = JSON.parse(fs.readFileSync(0, 'utf8'));
  if (!Array.isArray(queries)) {
    throw new Error('input must be a JSON array of strings');
  }
  process.stdout.write(JSON.stringify(queries.map(syntaxErrors)) + '\n');
} catch (err) {
  process.stderr.write(`syntax.js: ${err && err.stack ? err.stack : err}\n`);
  process.exitCode = 1;
}
