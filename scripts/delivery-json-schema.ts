import { DeliverySchema } from '../src/webhooks/payload.ts'

/** Where `npm run schema:export` writes the document; a test fails when it is out of date. */
export const SCHEMA_FILE = new URL('../docs/book-completion.schema.json', import.meta.url)

/**
 * The delivery's JSON Schema (draft-07, which Python's `jsonschema` and Ajv read) for senders to
 * validate before sending: `DeliverySchema`, the schema the route validates with, plus the
 * status-dependent rules that `checkDeliveryRules` enforces in code. Two checks stay server-only:
 * calendar-valid dates and text Postgres cannot store (U+0000, lone surrogates).
 */
export function deliveryJsonSchema (): Record<string, unknown> {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'book-completion.schema.json',
    title: 'Book-completion webhook delivery',
    ...JSON.parse(JSON.stringify(DeliverySchema)),
    allOf: [
      {
        if: { required: ['status'], properties: { status: { const: 'completed' } } },
        then: {
          required: ['book_data'],
          properties: { book_data: { type: 'object', required: ['chapters'], properties: { chapters: { type: 'array', minItems: 1 } } } },
        },
      },
      {
        if: { required: ['status'], properties: { status: { const: 'failed' } } },
        then: { required: ['error'], properties: { error: { type: 'string', minLength: 1 } } },
      },
    ],
  }
}

/** The file's exact text: stable key order, two-space indent, final newline. */
export function deliveryJsonSchemaText (): string {
  return `${JSON.stringify(deliveryJsonSchema(), null, 2)}\n`
}
