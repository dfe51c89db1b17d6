import { cloudAction } from '../action'

export default cloudAction('identifyGroup')
