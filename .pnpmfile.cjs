// Native addons (better-sqlite3) are built from source here: there is no network for prebuilt binaries or
// Node header downloads. node-gyp is pointed at the headers Node installed under /usr/include/node — what
// this machine's npm config does for npm, but pnpm passes only a few environment variables to install
// scripts, so the setting travels through pnpm's `extraEnv`.
const { existsSync } = require('node:fs')

const nodedir = process.env.npm_config_nodedir || (existsSync('/usr/include/node/node.h') ? '/usr' : undefined)

module.exports = {
  hooks: {
    updateConfig(config) {
      if (!nodedir) return config
      config.extraEnv = {
        ...config.extraEnv,
        npm_config_nodedir: nodedir,
        npm_package_config_node_gyp_nodedir: nodedir
      }
      return config
    }
  }
}
