/* Lets a child `node` process run the TypeScript sources directly (the tests' child processes),
 * transpiling each .ts file on require with the project's compiler. No type checking here: the
 * test run does that. */
'use strict';
/* global require */
/* eslint-disable @typescript-eslint/no-require-imports */
const fs = require('node:fs');
const ts = require('typescript');

require.extensions['.ts'] = function (module, filename) {
  const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    fileName: filename,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, resolveJsonModule: true },
  });
  module._compile(out.outputText, filename);
};
