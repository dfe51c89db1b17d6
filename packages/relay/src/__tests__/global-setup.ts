/** Starts one throwaway PostgreSQL cluster for the relay's tests (or uses ONEFLOW_TEST_PG_URL) and stops it at the end. */
import type { TestProject } from 'vitest/node'
import { startThrowawayPostgres } from '@oneflow-seg/testkit/postgres'

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string
  }
}

export default async function setup(project: TestProject): Promise<() => void> {
  const external = process.env.ONEFLOW_TEST_PG_URL
  const cluster = external ? undefined : await startThrowawayPostgres()
  project.provide('pgAdminUrl', external ?? (cluster as { url: string }).url)
  return () => cluster?.stop()
}
