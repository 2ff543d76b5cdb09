import { spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { freePort } from './free-port.ts'

/** Debian's package (`apt-get install -y pgbouncer`) puts the binary in /usr/sbin. */
const CANDIDATES = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']

export function findPgbouncer (): string | undefined {
  return CANDIDATES.find((path) => existsSync(path))
}

export interface RunningPgbouncer {
  /** `url` with its host and port replaced by PgBouncer's. */
  urlFor: (url: string) => string
  version: string
  stop: () => Promise<void>
}

/**
 * PgBouncer in transaction pooling mode in front of the server of `serverUrl`, on a free loopback
 * port. node-postgres sends statement_timeout and idle_in_transaction_session_timeout as startup
 * parameters, which PgBouncer refuses unless told to ignore them (it then does not forward them:
 * behind PgBouncer, set them on the role or database instead).
 */
export async function startPgbouncer (serverUrl: string, options: { poolSize?: number } = {}): Promise<RunningPgbouncer> {
  const binary = findPgbouncer()
  if (!binary) throw new Error('pgbouncer is not installed (apt-get install -y pgbouncer)')
  const server = new URL(serverUrl)
  const user = decodeURIComponent(server.username || 'postgres')
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'pgbouncer-'))
  chmodSync(dir, 0o777) // it drops root for the postgres user, which must write its log here
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" ""\n`, { mode: 0o644 })
  writeFileSync(join(dir, 'pgbouncer.ini'), [
    '[databases]',
    `* = host=${server.hostname} port=${server.port || 5432}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${join(dir, 'userlist.txt')}`,
    'pool_mode = transaction',
    `default_pool_size = ${options.poolSize ?? 20}`,
    'max_client_conn = 500',
    'ignore_startup_parameters = statement_timeout,idle_in_transaction_session_timeout',
    `logfile = ${join(dir, 'pgbouncer.log')}`,
    '',
  ].join('\n'), { mode: 0o644 })

  const versionText = await new Promise<string>((resolve) => {
    const child = spawn(binary, ['--version'])
    let out = ''
    child.stdout.on('data', (chunk) => { out += chunk })
    child.once('close', () => resolve(out))
  })
  const version = /PgBouncer (\S+)/.exec(versionText)?.[1] ?? 'unknown'

  // PgBouncer refuses to run as root; -u switches to the server's own OS user.
  const args = process.getuid?.() === 0 ? ['-u', 'postgres', join(dir, 'pgbouncer.ini')] : [join(dir, 'pgbouncer.ini')]
  const child = spawn(binary, args, { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))

  const urlFor = (url: string) => {
    const through = new URL(url)
    through.hostname = '127.0.0.1'
    through.port = String(port)
    return through.toString()
  }
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGINT')
    await exited
    rmSync(dir, { recursive: true, force: true })
  }

  const deadline = Date.now() + 10_000
  for (;;) {
    const client = new pg.Client({ connectionString: urlFor(serverUrl), connectionTimeoutMillis: 1000 })
    try {
      await client.connect()
      await client.query('SELECT 1')
      await client.end()
      break
    } catch (err) {
      await client.end().catch(() => {})
      if (child.exitCode !== null || Date.now() > deadline) {
        const log = existsSync(join(dir, 'pgbouncer.log')) ? readFileSync(join(dir, 'pgbouncer.log'), 'utf8').slice(-2000) : ''
        await stop()
        throw new Error(`pgbouncer did not start: ${(err as Error).message}\n${log}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  return { urlFor, version, stop }
}
