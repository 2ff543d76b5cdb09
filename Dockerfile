# syntax=docker/dockerfile:1

# Node 24, the Active LTS line (supported until 2028-04-30). Node 20 reached its end of life on
# 2026-04-30; 22 only gets maintenance fixes until 2027-04-30 (docs/OPERATIONS.md, "The Node.js line").
# Build stage: compile TypeScript with the dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies, the compiled code and the migrations; no TypeScript.
FROM node:24-bookworm-slim AS runtime
# tini is PID 1: it forwards SIGTERM/SIGINT to node (close-with-grace drains, exit 0) and reaps
# the zombies of whatever else runs in the container (npm's shells for the operator commands).
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=3001
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=optional too: drizzle-orm's optional peers (PGlite, @types/pg, @types/node) are in the lock
# file for development and tests; production never loads them (PGlite alone is 27 MB).
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY migrations ./migrations
# Files stay owned by root: the service cannot rewrite its own code.
USER node
EXPOSE 3001
# Node's fetch: the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3001) + '/health', { signal: AbortSignal.timeout(2000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
# Exec form, no npm or shell in between: tini's SIGTERM reaches node itself.
# Migrations are their own command: docker run IMAGE node dist/migrate.js
# Operator commands: docker compose exec webhook npm run deliveries -- show <job_id>
CMD ["node", "dist/server.js"]
