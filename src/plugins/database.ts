import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { openDatabase, type Database, type DatabaseHandle } from '../db/client.ts'

declare module 'fastify' {
  interface FastifyInstance {
    db: Database
  }
}

export interface DatabasePluginOptions {
  config: Config
  /** An already open database to share (several apps on one embedded database); its owner closes it. */
  shared?: DatabaseHandle | undefined
}

/** Opens the database once, decorates it as `db`, closes it when the app closes. */
export default fp<DatabasePluginOptions>(async (app, { config, shared }) => {
  if (shared) {
    app.decorate('db', shared.db)
    return
  }
  const handle = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir }, app.log)
  app.decorate('db', handle.db)
  app.addHook('onClose', async () => {
    await handle.close()
  })
}, { name: 'database' })
