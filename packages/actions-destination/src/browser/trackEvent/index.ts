import { browserAction } from '../action'

export default browserAction('trackEvent')
