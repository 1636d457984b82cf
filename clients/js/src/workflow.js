/**
 * Workflow handles: a chain, group or chord watched as one stream (every step's events and chunks).
 * @module
 */

import { Task } from "./task.js";

/** @typedef {"chain" | "group" | "chord"} WorkflowKind */

/**
 * A chain, group or chord: a Task handle over the workflow's frames (every step's events and stream
 * chunks, with `step`), plus its steps' ids.
 */
export class Workflow extends Task {
  /**
   * @param {import("./task.js").Owner} owner
   * @param {{workflow_id: string, kind?: WorkflowKind, task_ids?: string[], token?: string}} accepted
   */
  constructor(owner, accepted) {
    super(owner, accepted.workflow_id, accepted.token ?? null, { name: accepted.kind ?? null });
    /** "chain", "group" or "chord". @type {WorkflowKind | null} */
    this.kind = accepted.kind ?? null;
    /** The steps' task ids, in step order. @type {string[]} */
    this.taskIds = [...(accepted.task_ids ?? [])];
  }
}
