# scopegate image: built in one stage, run from a second holding only what the pooler needs.
# Mount the config (and policy, TLS files) at /etc/scopegate; deploy/kubernetes does.
# test/deploy.test.ts runs these COPY and RUN steps in a temporary directory: keep RUN
# commands relative to WORKDIR.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
# npm ci runs the prepare script (tsc), which compiles src/ into dist/src/; test/ and
# bench/ are never copied in, so nothing of them is compiled.
RUN npm ci --no-audit --no-fund
RUN npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/bin ./bin
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/node_modules ./node_modules
USER 1000:1000
EXPOSE 6432 9187
# node:*-slim has no curl or wget: ask with node itself. Port 9187 is admin.listen_http.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "require('node:http').get('http://127.0.0.1:9187/healthz', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
ENTRYPOINT ["node", "bin/scopegate.js"]
CMD ["--config", "/etc/scopegate/scopegate.yaml"]
