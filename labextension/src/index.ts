// The JupyterLab plugin: one websocket for the tab, the inline completion provider with its
// feedback tracker and partial accept commands, the status bar item and the personalize panel,
// wired together.

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  MainAreaWidget,
  Notification
} from '@jupyterlab/apputils';
import { ICompletionProviderManager } from '@jupyterlab/completer';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';

import { FeedbackTracker } from './completions/feedback';
import {
  ACCEPT_LINE_COMMAND,
  ACCEPT_WORD_COMMAND,
  addPartialAcceptCommands
} from './completions/partial';
import { SpecgenInlineProvider } from './completions/provider';
import { SpecgenConnection } from './connection';
import { ModelOffer } from './model';
import { PersonalizePanel } from './personalize/panel';
import { SpecgenStatus } from './status';

const PLUGIN_ID = 'jupyter-specgen:plugin';

/** Command ids. */
export namespace CommandIDs {
  export const personalize = 'specgen:personalize';
  /** Keys in schema/plugin.json: Ctrl+→ and Ctrl+Shift+→ while ghost text is shown. */
  export const acceptNextWord = ACCEPT_WORD_COMMAND;
  export const acceptLine = ACCEPT_LINE_COMMAND;
}

const PERSONALIZE_LABEL = 'Personalize my completions';
const PERSONALIZE_WIDGET_ID = 'jp-specgen-personalize';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Inline code completion grounded in the live kernel, validated before it is shown.',
  autoStart: true,
  requires: [ICompletionProviderManager],
  optional: [IStatusBar, ISettingRegistry, ICommandPalette, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    completionManager: ICompletionProviderManager,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null
  ): void => {
    const serverSettings = app.serviceManager.serverSettings;
    const connection = new SpecgenConnection({ serverSettings });
    const feedback = new FeedbackTracker({
      commands: app.commands,
      serverSettings
    });
    const provider = new SpecgenInlineProvider({
      connection,
      feedback,
      commands: app.commands
    });
    completionManager.registerInlineProvider(provider);
    if (notebooks) {
      addPartialAcceptCommands({
        commands: app.commands,
        notebooks,
        feedback,
        provider
      });
    }

    // The model in use and the better one offered: on the status bar and in the panel.
    const offer = new ModelOffer(connection);
    offer.setStatus(connection.status);
    connection.statusChanged.connect((_, message) => offer.setStatus(message));

    addPersonalizeCommand(app, connection, offer);
    palette?.addItem({ command: CommandIDs.personalize, category: 'Specgen' });
    // `?specgen=personalize` (the VS Code extension's "Personalize my completions") opens the panel.
    if (new URLSearchParams(window.location.search).get('specgen') === 'personalize') {
      void app.restored.then(() => app.commands.execute(CommandIDs.personalize));
    }

    if (!statusBar) {
      return;
    }
    const status = new SpecgenStatus({
      hint: `Click to ${PERSONALIZE_LABEL.toLowerCase()}.`,
      // Said once per tab; the status bar item keeps a marker after it.
      notify: message => Notification.warning(message, { autoClose: false }),
      // The status offers a better model while the embedded one serves; the click downloads it.
      offer
    });
    status.setStatus(connection.status);
    status.node.addEventListener('click', () => {
      void app.commands.execute(CommandIDs.personalize);
    });
    connection.statusChanged.connect((_, message) => status.setStatus(message));
    provider.started.connect(() => status.started());
    provider.progressed.connect((_, progress) => status.setProgress(progress));
    provider.completed.connect((_, { items, summary, error }) =>
      status.finished({ items, summary, error })
    );
    feedback.currentChanged.connect((_, item) => status.setShowing(item));

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

/** `specgen:personalize` opens the panel, or brings the open one to the front. */
function addPersonalizeCommand(
  app: JupyterFrontEnd,
  connection: SpecgenConnection,
  offer: ModelOffer
): void {
  let widget: MainAreaWidget<PersonalizePanel> | null = null;
  app.commands.addCommand(CommandIDs.personalize, {
    label: PERSONALIZE_LABEL,
    caption:
      'Train an adapter on your notebooks, see how it does, and roll back versions',
    execute: () => {
      if (!widget || widget.isDisposed) {
        const content = new PersonalizePanel({
          connection,
          offer,
          serverSettings: app.serviceManager.serverSettings
        });
        widget = new MainAreaWidget({ content });
        widget.id = PERSONALIZE_WIDGET_ID;
        widget.title.label = PERSONALIZE_LABEL;
        widget.title.closable = true;
      }
      if (!widget.isAttached) {
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
    }
  });
}

export default plugin;
