// The JupyterLab plugin: one websocket for the tab, the inline completion provider, the status
// bar item, wired together.

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICompletionProviderManager } from '@jupyterlab/completer';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';

import { SpecgenInlineProvider } from './completions/provider';
import { SpecgenConnection } from './connection';
import { SpecgenStatus } from './status';

const PLUGIN_ID = 'jupyter-specgen:plugin';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Inline code completion grounded in the live kernel, validated before it is shown.',
  autoStart: true,
  requires: [ICompletionProviderManager],
  optional: [IStatusBar, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    completionManager: ICompletionProviderManager,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null
  ): void => {
    const connection = new SpecgenConnection({
      serverSettings: app.serviceManager.serverSettings
    });
    const provider = new SpecgenInlineProvider({ connection });
    completionManager.registerInlineProvider(provider);

    if (!statusBar) {
      return;
    }
    const status = new SpecgenStatus();
    status.setStatus(connection.status);
    connection.statusChanged.connect((_, message) => status.setStatus(message));
    provider.started.connect(() => status.clearVerdict());
    provider.completed.connect((_, { item, error }) =>
      status.setVerdict(item, error)
    );

    let showStatus = true;
    const visibilityChanged = new Signal<SpecgenStatus, void>(status);
    statusBar.registerStatusItem(PLUGIN_ID.replace(':plugin', ':status'), {
      item: status,
      align: 'left',
      rank: 100,
      isActive: () => showStatus,
      activeStateChanged: visibilityChanged
    });

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = (): void => {
            showStatus = settings.get('showStatus').composite !== false;
            visibilityChanged.emit();
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.warn('[specgen] could not load settings', reason);
        });
    }
  }
};

export default plugin;
