// The official LiveStore sync backend (@livestore/sync-cf 0.4.0), unmodified:
// one Durable Object per storeId, WS + HTTP transports, CORS enabled.
// Deliberately no onPush/onPull hooks (logging every push slows benchmarks down).
import { makeDurableObject, makeWorker } from '@livestore/sync-cf/cf-worker'

export class SyncBackendDO extends makeDurableObject({}) {}

export default makeWorker({ syncBackendBinding: 'SYNC_BACKEND_DO', enableCORS: true })
