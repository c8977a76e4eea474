# scopegate container: the pooler only. Mount your config (and policy) at /etc/scopegate.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY test ./test
COPY bench ./bench
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config /etc/scopegate
USER node
EXPOSE 6432
ENTRYPOINT ["node", "bin/scopegate.js"]
CMD ["--config", "/etc/scopegate/scopegate.yaml"]
