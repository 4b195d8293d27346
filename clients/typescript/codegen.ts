// graphql-codegen: typed documents for src/operations.graphql against onramp's checked-in
// schema. `npm run generate` rewrites src/generated; a test generates into CODEGEN_OUT
// and fails when the checked-in file differs.
import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  schema: '../../schema.graphql',
  documents: 'src/operations.graphql',
  generates: {
    [process.env.CODEGEN_OUT ?? 'src/generated/graphql.ts']: {
      plugins: ['typescript-operations', 'typed-document-node'],
      config: {
        // @specifiedBy: DateTime is an RFC 3339 string, JSON any JSON value (ECMA-404).
        scalars: {
          DateTime: { input: 'string', output: 'string' },
          JSON: { input: 'unknown', output: 'unknown' },
        },
        enumsAsTypes: true,
        useTypeImports: true,
        avoidOptionals: { field: true, inputValue: false, object: true, defaultValue: false },
      },
    },
  },
  hooks: {},
};

export default config;
