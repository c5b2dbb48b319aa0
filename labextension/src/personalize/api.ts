// The personalize REST calls (`<base_url>specgen/personalize...`, `<base_url>specgen/feedback`),
// typed with the generated protocol. Every failure is raised as a `PersonalizeError` carrying the
// server's own message, which the panel shows as is.

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  IDataSummary,
  IErrorInfo,
  IFeedbackReport,
  IPersonalize,
  IRollbackRequest
} from '../protocol';

/**
 * A failed personalize request: `message` is the server's explanation (or the network's).
 */
export class PersonalizeError extends Error {
  constructor(message: string, status: number, type: IErrorInfo['type'] | '') {
    super(message);
    this.name = 'PersonalizeError';
    this.status = status;
    this.type = type;
  }

  /** The HTTP status (0 when the request never got an answer). */
  readonly status: number;
  /** The server's error type, '' when the answer was not the JSON error body. */
  readonly type: IErrorInfo['type'] | '';
}

/** The user's job (running or last) and adapters. */
export function getPersonalize(
  settings: ServerConnection.ISettings
): Promise<IPersonalize> {
  return request<IPersonalize>(settings, 'personalize', { method: 'GET' });
}

/** What a job would train on; scans the notebooks, so it can take a few seconds. */
export function getDataSummary(
  settings: ServerConnection.ISettings
): Promise<IDataSummary> {
  return request<IDataSummary>(settings, 'personalize/data', { method: 'GET' });
}

/** Start a job (202); 409 when one is running, 400 without data, 503 without a backend. */
export function startJob(
  settings: ServerConnection.ISettings
): Promise<IPersonalize> {
  return request<IPersonalize>(settings, 'personalize', {
    method: 'POST',
    body: '{}'
  });
}

/** Cancel the running job. */
export function cancelJob(
  settings: ServerConnection.ISettings
): Promise<IPersonalize> {
  return request<IPersonalize>(settings, 'personalize', { method: 'DELETE' });
}

/** Put an earlier version of an adapter back in service (default: the one before the current). */
export function rollback(
  settings: ServerConnection.ISettings,
  body: IRollbackRequest = {}
): Promise<IPersonalize> {
  return request<IPersonalize>(settings, 'personalize/rollback', {
    method: 'POST',
    body: JSON.stringify(body)
  });
}

/** Report an accepted or dismissed suggestion (204). */
export async function postFeedback(
  settings: ServerConnection.ISettings,
  report: IFeedbackReport
): Promise<void> {
  await request<null>(settings, 'feedback', {
    method: 'POST',
    body: JSON.stringify(report)
  });
}

async function request<T>(
  settings: ServerConnection.ISettings,
  endpoint: string,
  init: RequestInit
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'specgen', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (reason) {
    // makeRequest raises NetworkError when the server cannot be reached at all.
    throw new PersonalizeError(
      `could not reach the Jupyter server: ${(reason as Error).message ?? reason}`,
      0,
      'backend_unavailable'
    );
  }
  const text = await response.text();
  if (!response.ok) {
    throw errorOf(response, text);
  }
  if (response.status === 204 || !text) {
    return null as T;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new PersonalizeError(
      `${endpoint}: the server answered ${response.status} with a body that is not JSON`,
      response.status,
      ''
    );
  }
}

/** The `{"error": {type, message}}` body when there is one, else the status line. */
function errorOf(response: Response, text: string): PersonalizeError {
  try {
    const body = JSON.parse(text) as { error?: Partial<IErrorInfo> };
    if (body.error && typeof body.error.message === 'string') {
      return new PersonalizeError(
        body.error.message,
        response.status,
        body.error.type ?? ''
      );
    }
  } catch {
    // not our JSON error body (a proxy's or tornado's HTML page): fall through
  }
  return new PersonalizeError(
    `the server answered ${response.status} ${response.statusText}`.trim(),
    response.status,
    ''
  );
}
