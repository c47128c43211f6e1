#!/usr/bin/env node
// Validate KQL queries with Microsoft's official Kusto.Language parser/binder.
//
// stdin:  {"schema": {"Table": [["Column", "type"], ...], ...}, "queries": ["...", ...]}
// stdout: one JSON array with, per query (same order), a list of diagnostics
//         {"code", "severity", "message", "start", "length", "line", "column"}.
//
// Diagnostics include every severity Kusto reports (Error, Warning, Suggestion, ...);
// callers filter on "severity". start/length are offsets in Unicode code points
// (i.e. Python str indices), line/column are 1-based and computed from start.
// All queries are analysed in this one process: loading the library is the costly part.
'use strict';

const fs = require('fs');

require('@kusto/language-service-next/bridge.min.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');

const K = globalThis.Kusto.Language;

// Type names that appear in Defender schema docs but that Kusto does not spell that way.
// (ScalarTypes.GetSymbol already accepts common aliases such as "boolean" and "double".)
const TYPE_ALIASES = { boolean: 'bool', integer: 'int', float: 'real', uuid: 'guid' };

function scalarType(table, column, typeName) {
  const name = String(typeName).trim().toLowerCase();
  const symbol = K.Symbols.ScalarTypes.GetSymbol(TYPE_ALIASES[name] || name);
  if (!symbol) {
    throw new Error(`unknown Kusto type ${JSON.stringify(typeName)} for ${table}.${column}`);
  }
  return symbol;
}

function buildGlobals(schema) {
  const tables = Object.entries(schema || {}).map(([table, columns]) => {
    if (!Array.isArray(columns)) {
      throw new Error(`schema for table ${table} must be a list of [column, type] pairs`);
    }
    const symbols = columns.map(([column, type]) =>
      new K.Symbols.ColumnSymbol(column, scalarType(table, column, type), null, null, null, null));
    return new K.Symbols.TableSymbol.$ctor4(table, symbols);
  });
  return K.GlobalState.Default.WithDatabase(new K.Symbols.DatabaseSymbol.ctor('db', tables));
}

// Kusto reports UTF-16 offsets (.NET strings); convert to code points and line/column.
function locate(text, utf16Start, utf16Length) {
  let start = 0;
  let line = 1;
  let lineStart = 0; // code point offset of the current line's first character
  let i = 0;
  while (i < utf16Start && i < text.length) {
    const ch = text.charCodeAt(i);
    const width = ch >= 0xd800 && ch <= 0xdbff && i + 1 < text.length ? 2 : 1;
    i += width;
    start += 1;
    if (ch === 0x0a || (ch === 0x0d && text.charCodeAt(i) !== 0x0a)) {
      line += 1;
      lineStart = start;
    }
  }
  const end = Array.from(text.slice(i, Math.max(i, utf16Start + utf16Length))).length;
  return { start, length: end, line, column: start - lineStart + 1 };
}

function diagnose(query, globals) {
  if (typeof query !== 'string') {
    throw new Error('every query must be a string');
  }
  const diagnostics = K.KustoCode.ParseAndAnalyze(query, globals).GetDiagnostics();
  return globalThis.Bridge.toArray(diagnostics).map((d) => {
    const where = locate(query, d.Start, d.Length);
    return {
      code: d.Code,
      severity: d.Severity,
      message: d.Message,
      start: where.start,
      length: where.length,
      line: where.line,
      column: where.column,
    };
  });
}

function main() {
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  if (!request || !Array.isArray(request.queries)) {
    throw new Error('input must be a JSON object with a "queries" array');
  }
  const globals = buildGlobals(request.schema);
  const result = request.queries.map((query) => diagnose(query, globals));
  process.stdout.write(JSON.stringify(result) + '\n');
}

try {
  main();
} catch (err) {
  process.stderr.write(`validate.js: ${err && err.stack ? err.stack : err}\n`);
  process.exitCode = 1;
}
