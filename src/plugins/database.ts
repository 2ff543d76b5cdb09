import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { openDatabase, type DatabaseHandle } from '../db/client.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The database: it owns how statements are sent (named or not, which driver). */
    db: DatabaseHandle
  }
}

interface DatabasePluginOptions {
  config: Config
  /** An already open database to share (several apps on one embedded database); its owner closes it. */
  shared?: DatabaseHandle | undefined
}

/** Opens the database once, decorates it as `db`, closes it when the app closes. */
export default fp<DatabasePluginOptions>(async (app, { config, shared }) => {
  const handle = shared ?? await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    preparedStatements: config.preparedStatements,
  }, app.log)
  app.decorate('db', handle)
  if (!shared) {
    app.addHook('onClose', async () => {
      await handle.close()
    })
  }
}, { name: 'database' })
