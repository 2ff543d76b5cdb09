import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.ts'
import { API_DOCS_PATH } from './plugins/api-docs.ts'
import { SHUTDOWN_GRACE_MS } from './plugins/graceful-close.ts'
import { BOOK_COMPLETION_PATH } from './routes/book-completion.ts'
import { ConfigError, loadConfig } from './config.ts'
import { stackFrames } from './logger.ts'

/** Read at start when present, in the working directory; variables already set win over it. */
const ENV_FILE = '.env'

// Not `node --env-file-if-exists`: under `tsx watch` it prints "not found" twice when there is none.
function loadEnvFile (): void {
  if (!existsSync(ENV_FILE)) return
  try {
    process.loadEnvFile(ENV_FILE)
  } catch (err) {
    throw new ConfigError(ENV_FILE, `cannot be read: ${(err as Error).message}`)
  }
}

async function main (): Promise<void> {
  let config, app
  try {
    loadEnvFile()
    config = loadConfig()
    app = await buildApp(config)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }

  if (config.environment === 'development') {
    app.log.warn('development: requests without signature headers are accepted (logged verified: false); outside development every request must be signed')
    if (config.weakSecrets > 0) app.log.warn('WEBHOOK_SECRET holds a weak key (under 24 bytes): refused outside development')
  }

  const keys = config.webhookKeys.length
  if (keys > 1) {
    // A plain secret with spaces is split too, and then none of its parts is what the sender signs with.
    app.log.warn({ webhookKeys: keys }, `WEBHOOK_SECRET holds ${keys} keys: whitespace separates rotation keys, and a signature made with any of them passes (a secret with spaces in it must be given as whsec_<base64>)`)
  }

  closeWithGrace({ delay: SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
    if (err) app.log.error({ errName: err.name, frames: stackFrames(err) }, 'closing after an error')
    else app.log.info({ signal }, 'closing: finishing in-flight deliveries')
    await app.close()
  })

  await app.listen({ port: config.port, host: config.host })
  const { port } = app.server.address() as AddressInfo
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host
  app.log.info({ environment: config.environment, database: config.databaseUrl ? 'postgres' : 'embedded' },
    `webhook endpoint: POST http://${shownHost}:${port}${BOOK_COMPLETION_PATH}`)
  if (config.apiDocs) app.log.info(`API page: http://${shownHost}:${port}${API_DOCS_PATH}`)
}

await main()
