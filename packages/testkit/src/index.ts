export { loadFixtures, fixtureSettings, expectedOutcome, expectedConfigError, FIXTURES_DIR } from './fixtures'
export { reviveFixtureJson, FIXTURE_API_KEY } from './fixture-json'
export type {
  Fixture,
  FixtureAdapter,
  FixtureExpectation,
  ExpectedCall,
  ExpectedHttp,
  SdkCall,
  LoadOptions
} from './fixture-json'
export { FakeOneFlowApi, FakeTimeoutError, FAKE_LIMITS } from './fake-oneflow-api'
export type { FakeFault, RecordedRequest, AcceptedMessage, FakeOneFlowOptions } from './fake-oneflow-api'
export { recordingSdkScript } from './recording-sdk'
export type { SdkShape, SdkRecord, RecordingSdkOptions } from './recording-sdk'
export { normalizeWire, sortKeys, redactSecrets } from './wire'
export type { WireRequest } from './wire'
export {
  launchChromium,
  bundlePage,
  PageServer,
  openPage,
  withOpenPage,
  startTestPage,
  harnessCalls,
  browserExpectation,
  withIdentityFirst,
  HarnessError,
  CHROMIUM_FLAGS,
  CHROMIUM_PATH,
  LIQUID_STUB,
  ORDERING_EVENTS,
  ORDERING_LABELS,
  ORDERING_CALLS,
  sdkHasCalls,
  afterFailedLoad
} from './browser-harness'
export type { SdkServing, OpenedPage, PageHarnessApi } from './browser-harness'
export {
  measurePluginBundle,
  measurePluginSplit,
  measureMappingChunk,
  measureDestinationBundle,
  BUDGETS
} from './bundle-size'
export type { BundleSize, SplitSize } from './bundle-size'
export { startThrowawayPostgres, createDatabase, postgresBinDir } from './postgres'
export type { ThrowawayPostgres } from './postgres'
export { FakeSegmentApi } from './fake-segment-api'
export type { SegmentFault, SegmentRequest, SegmentAcceptedEvent } from './fake-segment-api'
export { surveyWebhookPayload, manyScreens, NPS_SURVEY_SCREENS } from './survey-webhook'
export type { SurveyScreen, SurveyWebhookOptions } from './survey-webhook'
