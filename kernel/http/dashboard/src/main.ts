/** Entry point: the stylesheet and the two custom elements. */
import './style.css';
import './chart.js';
import './app.js';
