import { browserAction } from '../action'

export default browserAction('identifyGroup')
