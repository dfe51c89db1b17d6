import { browserAction } from '../action'

export default browserAction('identifyUser')
