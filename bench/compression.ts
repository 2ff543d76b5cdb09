/**
 * `npm run bench:compression`: the pgbench floor (-M prepared, the 94 KB book) with
 * chapters.content compressed by pglz (Postgres's default) and by lz4 (migration 0002), twice
 * each, alternating: Postgres CPU per transaction and the table's size.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { bookOfSize } from '../scripts/deliveries.ts'
import { adminQuery } from '../test/support/postgres.ts'
import { createBenchDatabase } from './database.ts'
import { runFloor } from './floor.ts'
import { exitOnBadOption } from './options.ts'

const USAGE = 'npm run bench:compression, no options: about 30 s of pgbench'
if (process.argv[2] === '--help' || process.argv[2] === '-h') {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}
if (process.argv.length > 2) exitOnBadOption(`unexpected ${JSON.stringify(process.argv[2])}`, USAGE)

const book = bookOfSize(10, 94_000)
const workDir = mkdtempSync(join(tmpdir(), 'bcw-compression-'))
try {
  for (const method of ['pglz', 'lz4', 'pglz', 'lz4']) {
    const database = await createBenchDatabase()
    try {
      await adminQuery(`ALTER TABLE chapters ALTER COLUMN content SET COMPRESSION ${method}`, database.url)
      const floor = await runFloor({
        book,
        databaseUrl: database.url,
        database: database.name,
        postmasterPid: database.postmasterPid,
        connections: 10,
        durationSeconds: 5,
        protocol: 'prepared',
        workDir,
      })
      const [size] = await adminQuery<{ bytes: string }>('SELECT pg_total_relation_size(\'chapters\')::text AS bytes', database.url)
      process.stdout.write(`${method.padEnd(4)}  ${floor.tps.toFixed(0).padStart(5)} tx/s  ${floor.backendsCpuMsPerTx.toFixed(3)} ms Postgres CPU/tx  ` +
        `${(Number(size!.bytes) / floor.transactions / 1000).toFixed(1)} KB stored/tx  (load ${(await import('node:os')).loadavg()[0]!.toFixed(2)})\n`)
    } finally {
      await database.drop()
    }
  }
} finally {
  rmSync(workDir, { recursive: true, force: true })
}
