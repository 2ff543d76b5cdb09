import type { AddressInfo } from 'node:net'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.ts'
import { BOOK_COMPLETION_PATH } from './routes/book-completion.ts'
import { ConfigError, loadConfig } from './config.ts'
import { stackFrames } from './logger.ts'

/** How long in-flight deliveries get to finish after SIGTERM/SIGINT. */
export const SHUTDOWN_GRACE_MS = 10_000

async function main (): Promise<void> {
  let config
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }

  const app = await buildApp(config)
  if (config.environment === 'development' && config.weakSecrets > 0) {
    app.log.warn('WEBHOOK_SECRET holds a weak key (under 24 bytes): refused outside development')
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
}

await main()
