/** http family (issue 10): being written; registered so that its folder is all it touches. */
import { defineFamily } from '../../core/family.js';

export default defineFamily(() => ({ name: 'http', handlers: {} }));
