import { writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { deliveryJsonSchemaText, SCHEMA_FILE } from './delivery-json-schema.ts'

/** `npm run schema:export`: writes docs/book-completion.schema.json from the route's TypeBox schema. */
await writeFile(SCHEMA_FILE, deliveryJsonSchemaText())
process.stdout.write(`wrote ${fileURLToPath(SCHEMA_FILE)}\n`)
